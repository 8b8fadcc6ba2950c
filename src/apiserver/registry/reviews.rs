//! The review kinds, answered and never stored (create only): who am I
//! (SelfSubjectReview), whose is this token (TokenReview), may I / may they
//! (SelfSubjectAccessReview, SubjectAccessReview, LocalSubjectAccessReview), and what may I
//! (SelfSubjectRulesReview). The answers are the server's (`reviews` beside `rest`).

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenReview};
use k8s_openapi::api::authorization::v1::{
    LocalSubjectAccessReview, SelfSubjectAccessReview, SelfSubjectRulesReview, SubjectAccessReview,
};

use super::{Cause, Rules};

pub struct SelfSubjectReviews;
pub struct TokenReviews;
pub struct SelfSubjectAccessReviews;
pub struct SubjectAccessReviews;
pub struct LocalSubjectAccessReviews;
pub struct SelfSubjectRulesReviews;

const CREATE: &[&str] = &["create"];

/// Exactly one of resourceAttributes and nonResourceAttributes.
fn one_kind_of_attributes(resource: bool, non_resource: bool) -> Vec<Cause> {
    match (resource, non_resource) {
        (true, true) => vec![(
            "spec.resourceAttributes".into(),
            "Invalid value: cannot be specified in combination with nonResourceAttributes".into(),
        )],
        (false, false) => vec![(
            "spec.resourceAttributes".into(),
            "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified".into(),
        )],
        _ => vec![],
    }
}

impl Rules for SelfSubjectReviews {
    type Object = SelfSubjectReview;
    const VERBS: &'static [&'static str] = CREATE;
    const STORED: bool = false;
}

impl Rules for TokenReviews {
    type Object = TokenReview;
    const VERBS: &'static [&'static str] = CREATE;
    const STORED: bool = false;

    fn validate(review: &TokenReview) -> Vec<Cause> {
        match review.spec.token.as_deref().is_none_or(str::is_empty) {
            true => vec![("spec.token".into(), "Required value".into())],
            false => vec![],
        }
    }
}

impl Rules for SelfSubjectAccessReviews {
    type Object = SelfSubjectAccessReview;
    const VERBS: &'static [&'static str] = CREATE;
    const STORED: bool = false;

    fn validate(review: &SelfSubjectAccessReview) -> Vec<Cause> {
        one_kind_of_attributes(review.spec.resource_attributes.is_some(), review.spec.non_resource_attributes.is_some())
    }
}

impl Rules for SubjectAccessReviews {
    type Object = SubjectAccessReview;
    const VERBS: &'static [&'static str] = CREATE;
    const STORED: bool = false;

    fn validate(review: &SubjectAccessReview) -> Vec<Cause> {
        let spec = &review.spec;
        let mut causes =
            one_kind_of_attributes(spec.resource_attributes.is_some(), spec.non_resource_attributes.is_some());
        if spec.user.as_deref().is_none_or(str::is_empty) && spec.groups.as_ref().is_none_or(Vec::is_empty) {
            causes.push((
                "spec.user".into(),
                "Invalid value: \"\": at least one of user or group must be specified".into(),
            ));
        }
        causes
    }
}

impl Rules for LocalSubjectAccessReviews {
    type Object = LocalSubjectAccessReview;
    const VERBS: &'static [&'static str] = CREATE;
    const STORED: bool = false;

    fn validate(review: &LocalSubjectAccessReview) -> Vec<Cause> {
        let spec = &review.spec;
        let mut causes =
            one_kind_of_attributes(spec.resource_attributes.is_some(), spec.non_resource_attributes.is_some());
        if spec.non_resource_attributes.is_some() {
            causes.push((
                "spec.nonResourceAttributes".into(),
                "Invalid value: disallowed on this kind of request".into(),
            ));
        }
        causes
    }
}

impl Rules for SelfSubjectRulesReviews {
    type Object = SelfSubjectRulesReview;
    const VERBS: &'static [&'static str] = CREATE;
    const STORED: bool = false;
}
