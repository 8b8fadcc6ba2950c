//! limitranges (core/v1): per-container, per-pod and per-claim bounds of a namespace, and
//! the defaults admission gives containers that set none.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::LimitRange;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Amount;

use super::super::checks::one_of;
use super::super::{Cause, Rules};
use crate::quantity::Quantity;

pub struct LimitRanges;

type Amounts = BTreeMap<String, Amount>;

fn value(amounts: &Option<Amounts>, name: &str) -> Option<Quantity> {
    Quantity::parse(&amounts.as_ref()?.get(name)?.0)
}

impl Rules for LimitRanges {
    type Object = LimitRange;
    const SHORT_NAMES: &'static [&'static str] = &["limits"];

    fn default(range: &mut LimitRange) {
        // SetDefaults_LimitRangeItem, for containers: a default limit from max, a default
        // request from the default limit, else from min.
        for item in range.spec.iter_mut().flat_map(|s| s.limits.iter_mut()) {
            if item.type_ != "Container" {
                continue;
            }
            for (name, max) in item.max.clone().unwrap_or_default() {
                item.default.get_or_insert_with(Default::default).entry(name).or_insert(max);
            }
            for (name, default) in item.default.clone().unwrap_or_default() {
                item.default_request.get_or_insert_with(Default::default).entry(name).or_insert(default);
            }
            for (name, min) in item.min.clone().unwrap_or_default() {
                item.default_request.get_or_insert_with(Default::default).entry(name).or_insert(min);
            }
        }
    }

    fn validate(range: &LimitRange) -> Vec<Cause> {
        let mut causes = Vec::new();
        let mut seen = Vec::new();
        for (i, item) in range.spec.iter().flat_map(|s| s.limits.iter()).enumerate() {
            let path = format!("spec.limits[{i}]");
            let kind = item.type_.as_str();
            if !kind.contains('/') {
                causes.extend(one_of(
                    &format!("{path}.type"),
                    Some(kind),
                    &["Container", "Pod", "PersistentVolumeClaim"],
                ));
            }
            if seen.contains(&kind) {
                causes.push((format!("{path}.type"), format!("Duplicate value: \"{kind}\"")));
            }
            seen.push(kind);
            if kind == "Pod" {
                for (field, set) in
                    [("default", item.default.is_some()), ("defaultRequest", item.default_request.is_some())]
                {
                    if set {
                        causes.push((
                            format!("{path}.{field}"),
                            "Forbidden: may not be specified when `type` is 'Pod'".into(),
                        ));
                    }
                }
            }
            if kind == "PersistentVolumeClaim"
                && value(&item.min, "storage").is_none()
                && value(&item.max, "storage").is_none()
            {
                causes.push((
                    format!("{path}.min"),
                    "Required value: either minimum or maximum storage value is required, but neither was provided"
                        .into(),
                ));
            }
            let names = [&item.min, &item.max, &item.default, &item.default_request]
                .into_iter()
                .flat_map(|a| a.iter().flat_map(|m| m.keys().cloned()))
                .collect::<std::collections::BTreeSet<_>>();
            for name in names {
                let (min, max) = (value(&item.min, &name), value(&item.max, &name));
                let (default, request) = (value(&item.default, &name), value(&item.default_request, &name));
                let shown =
                    |a: &Option<Amounts>| a.as_ref().and_then(|m| m.get(&name)).map_or(String::new(), |q| q.0.clone());
                let mut check = |low: Option<Quantity>,
                                 high: Option<Quantity>,
                                 field: &str,
                                 of: &Option<Amounts>,
                                 message: String| {
                    if let (Some(low), Some(high)) = (low, high)
                        && low > high
                    {
                        causes.push((
                            format!("{path}.{field}[{name}]"),
                            format!("Invalid value: \"{}\": {message}", shown(of)),
                        ));
                    }
                };
                let (min_text, max_text) = (shown(&item.min), shown(&item.max));
                let (default_text, request_text) = (shown(&item.default), shown(&item.default_request));
                check(min, max, "min", &item.min, format!("min value {min_text} is greater than max value {max_text}"));
                check(
                    min,
                    request,
                    "defaultRequest",
                    &item.default_request,
                    format!("min value {min_text} is greater than default request value {request_text}"),
                );
                check(
                    request,
                    max,
                    "defaultRequest",
                    &item.default_request,
                    format!("default request value {request_text} is greater than max value {max_text}"),
                );
                check(
                    request,
                    default,
                    "defaultRequest",
                    &item.default_request,
                    format!("default request value {request_text} is greater than default limit value {default_text}"),
                );
                check(
                    min,
                    default,
                    "default",
                    &item.default,
                    format!("min value {min_text} is greater than default value {default_text}"),
                );
                check(
                    default,
                    max,
                    "default",
                    &item.default,
                    format!("default value {default_text} is greater than max value {max_text}"),
                );
            }
            for (name, ratio) in item.max_limit_request_ratio.iter().flatten() {
                if Quantity::parse(&ratio.0).is_none_or(|r| r < Quantity::parse("1").expect("1 is a quantity")) {
                    causes.push((
                        format!("{path}.maxLimitRequestRatio[{name}]"),
                        format!("Invalid value: \"{}\": ratio {} is less than 1", ratio.0, ratio.0),
                    ));
                }
            }
        }
        causes
    }
}
