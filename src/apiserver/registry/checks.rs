//! The small checks every strategy's validation is made of, worded as kube-apiserver's
//! field errors (k8s.io/apimachinery pkg/util/validation/field).

use super::Cause;

/// Each of `fields` that is set must be zero or more (ValidateNonnegativeField).
pub fn non_negative<const N: usize>(fields: [(&str, Option<i64>); N]) -> Vec<Cause> {
    fields
        .into_iter()
        .filter_map(|(path, value)| {
            let value = value.filter(|v| *v < 0)?;
            Some((path.to_string(), format!("Invalid value: {value}: must be greater than or equal to 0")))
        })
        .collect()
}

/// `value` at `path`, if set, must be one of `supported` (field.NotSupported).
pub fn one_of(path: &str, value: Option<&str>, supported: &[&str]) -> Option<Cause> {
    let value = value.filter(|v| !supported.contains(v))?;
    let listed: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
    Some((path.to_string(), format!("Unsupported value: \"{value}\": supported values: {}", listed.join(", "))))
}

/// A field of an update that may not change: kube-apiserver's ValidateImmutableField.
pub fn immutable<T: PartialEq + serde::Serialize>(new: &T, old: &T, path: &str) -> Option<Cause> {
    (new != old).then(|| {
        let shown = serde_json::to_string(new).unwrap_or_default();
        (path.to_string(), format!("Invalid value: {shown}: field is immutable"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_as_kube_apiserver_words_them() {
        assert_eq!(
            non_negative([("spec.a", Some(-1)), ("spec.b", Some(0)), ("spec.c", None)]),
            [("spec.a".to_string(), "Invalid value: -1: must be greater than or equal to 0".to_string())]
        );
        assert_eq!(
            one_of("spec.type", Some("X"), &["A", "B"]).unwrap().1,
            "Unsupported value: \"X\": supported values: \"A\", \"B\""
        );
        assert!(one_of("spec.type", None, &["A"]).is_none());
        assert_eq!(immutable(&1, &2, "spec.x").unwrap().1, "Invalid value: 1: field is immutable");
    }
}
