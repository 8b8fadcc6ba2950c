//! A built-in resource's strategy, written on its k8s-openapi type ([`Rules`]) and served
//! on JSON values ([`Typed`]): where the resource lives comes from the type itself
//! (`k8s_openapi::Resource`), what the server does to its objects from the rules.

use std::any::TypeId;
use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{ALL_VERBS, Cause, Column, Decoded, FieldLabel, ResourceInfo, Scale, Strategy, columns};
use crate::apiserver::errors::ApiError;

/// What one built-in resource adds to the generic handling of objects. Every method has
/// the default of a resource with no rules of its own.
pub trait Rules: Send + Sync + 'static {
    type Object: k8s_openapi::Resource + Serialize + DeserializeOwned + Send;

    const SHORT_NAMES: &'static [&'static str] = &[];
    /// `&["all"]` for the kinds `kubectl get all` shows.
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [&'static str] = &[];
    const VERBS: &'static [&'static str] = &ALL_VERBS;
    /// Whether the kind's strategy keeps `metadata.generation` (most workloads do; pods,
    /// services, config maps and the like do not).
    const GENERATION: bool = false;

    fn name_rule() -> fn(&str) -> Vec<String> {
        crate::validation::dns_subdomain
    }

    /// SetDefaults_*: what the kind's defaulting adds.
    fn default(_object: &mut Self::Object) {}

    /// PrepareForCreate: what the server sets on a new object.
    fn prepare_for_create(_object: &mut Self::Object) {}

    /// Validate: what is wrong with an object, created or updated.
    fn validate(_object: &Self::Object) -> Vec<Cause> {
        vec![]
    }

    /// What is wrong with a new object beyond Validate.
    fn validate_create(_object: &Self::Object) -> Vec<Cause> {
        vec![]
    }

    /// PrepareForUpdate.
    fn prepare_for_update(_new: &mut Self::Object, _old: &Self::Object) {}

    /// ValidateUpdate beyond Validate: what may not change.
    fn validate_update(_new: &Self::Object, _old: &Self::Object) -> Vec<Cause> {
        vec![]
    }

    /// The status subresource's PrepareForUpdate, after everything but the status has been
    /// taken from the stored object.
    fn prepare_for_status_update(_new: &mut Self::Object, _old: &Self::Object) {}

    fn validate_status_update(_new: &Self::Object, _old: &Self::Object) -> Vec<Cause> {
        vec![]
    }

    /// What the server does on a write of another subresource (everything else is the
    /// stored object's already).
    fn prepare_for_subresource_update(_subresource: &str, _new: &mut Self::Object, _old: &Self::Object) {}

    /// What is wrong with a write of another subresource.
    fn validate_subresource_update(_subresource: &str, _new: &Self::Object, _old: &Self::Object) -> Vec<Cause> {
        vec![]
    }

    fn columns() -> Vec<Column> {
        columns::default()
    }

    fn field_labels() -> Vec<FieldLabel> {
        vec![]
    }

    fn scale(_object: &Self::Object) -> Option<Scale> {
        None
    }

    /// Whether a deletion waits for more than `metadata.finalizers` (a namespace's
    /// `spec.finalizers`).
    fn awaits_finalization(_object: &Self::Object) -> bool {
        false
    }

    /// Whether objects are kept: reviews are answered, not stored.
    const STORED: bool = true;

    /// Where objects are stored when they are another group's (events.k8s.io's events are
    /// core events), and the conversion to and from that form.
    const STORED_AS: Option<StoredAs> = None;

    /// The object as the columns read it (the stored form, for a kind stored as another).
    fn printable(object: &Value) -> Cow<'_, Value> {
        Cow::Borrowed(object)
    }
}

/// A built-in resource kept as another group's objects.
pub struct StoredAs {
    pub group: &'static str,
    pub to_storage: fn(&mut Value),
    pub from_storage: fn(&mut Value),
}

/// A [`Rules`] served as a [`Strategy`].
pub struct Typed<R: Rules> {
    info: ResourceInfo,
    columns: Vec<Column>,
    field_labels: Vec<FieldLabel>,
    rules: PhantomData<R>,
}

impl<R: Rules> Typed<R> {
    pub fn shared() -> Arc<dyn Strategy> {
        use k8s_openapi::Resource;
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        let scope = TypeId::of::<<R::Object as Resource>::Scope>();
        let info = ResourceInfo {
            group: R::Object::GROUP.into(),
            version: R::Object::VERSION.into(),
            plural: R::Object::URL_PATH_SEGMENT.into(),
            kind: R::Object::KIND.into(),
            namespaced: scope == TypeId::of::<k8s_openapi::NamespaceResourceScope>(),
            short_names: strings(R::SHORT_NAMES),
            categories: strings(R::CATEGORIES),
            subresources: strings(R::SUBRESOURCES),
            verbs: strings(R::VERBS),
            storage_group: R::STORED_AS.as_ref().map(|s| s.group.to_string()),
        };
        Arc::new(Typed::<R> { info, columns: R::columns(), field_labels: R::field_labels(), rules: PhantomData })
    }
}

fn typed<T: DeserializeOwned>(object: &Value) -> Result<T, ApiError> {
    serde_json::from_value(object.clone()).map_err(|e| ApiError::bad_request(format!("error decoding the object: {e}")))
}

fn untyped<T: Serialize>(object: &T) -> Value {
    serde_json::to_value(object).expect("k8s-openapi types serialise")
}

/// A stored (or already prepared) object as its type: decoding it cannot fail.
fn stored<T: DeserializeOwned>(object: &Value) -> Option<T> {
    serde_json::from_value(object.clone()).ok()
}

impl<R: Rules> Strategy for Typed<R> {
    fn info(&self) -> &ResourceInfo {
        &self.info
    }

    fn decode(&self, object: Value) -> Result<Decoded, ApiError> {
        let mut decoded: R::Object = typed(&object)?;
        let mut unknown = Vec::new();
        crate::validation::collect_unknown(&object, &untyped(&decoded), "", &mut unknown);
        R::default(&mut decoded);
        Ok(Decoded { object: untyped(&decoded), unknown })
    }

    fn prepare_create(&self, object: &mut Value) -> Vec<Cause> {
        let Some(mut decoded) = stored::<R::Object>(object) else { return vec![] };
        R::prepare_for_create(&mut decoded);
        let mut causes = R::validate(&decoded);
        causes.extend(R::validate_create(&decoded));
        *object = untyped(&decoded);
        causes
    }

    fn prepare_update(&self, new: &mut Value, old: &Value) -> Vec<Cause> {
        let (Some(mut decoded), Some(previous)) = (stored::<R::Object>(new), stored::<R::Object>(old)) else {
            return vec![];
        };
        R::prepare_for_update(&mut decoded, &previous);
        let mut causes = R::validate(&decoded);
        causes.extend(R::validate_update(&decoded, &previous));
        *new = untyped(&decoded);
        causes
    }

    fn prepare_status_update(&self, new: &mut Value, old: &Value) -> Vec<Cause> {
        let (Some(mut decoded), Some(previous)) = (stored::<R::Object>(new), stored::<R::Object>(old)) else {
            return vec![];
        };
        R::prepare_for_status_update(&mut decoded, &previous);
        let causes = R::validate_status_update(&decoded, &previous);
        *new = untyped(&decoded);
        causes
    }

    fn prepare_subresource_update(&self, subresource: &str, new: &mut Value, old: &Value) -> Vec<Cause> {
        let (Some(mut decoded), Some(previous)) = (stored::<R::Object>(new), stored::<R::Object>(old)) else {
            return vec![];
        };
        R::prepare_for_subresource_update(subresource, &mut decoded, &previous);
        let causes = R::validate_subresource_update(subresource, &decoded, &previous);
        *new = untyped(&decoded);
        causes
    }

    fn name_rule(&self) -> fn(&str) -> Vec<String> {
        R::name_rule()
    }

    fn tracks_generation(&self) -> bool {
        R::GENERATION
    }

    fn column_definitions(&self) -> Vec<Value> {
        self.columns.iter().map(Column::definition).collect()
    }

    fn cells(&self, object: &Value) -> Vec<Value> {
        let printable = R::printable(object);
        self.columns.iter().map(|c| (c.cell)(&printable)).collect()
    }

    fn to_storage(&self, object: &mut Value) {
        match &R::STORED_AS {
            Some(stored) => (stored.to_storage)(object),
            None => super::set_api_version(object, &self.info.api_version()),
        }
    }

    fn from_storage(&self, object: &mut Value) {
        match &R::STORED_AS {
            Some(stored) => (stored.from_storage)(object),
            None => super::set_api_version(object, &self.info.api_version()),
        }
    }

    fn stored_as_served(&self) -> bool {
        R::STORED_AS.is_none()
    }

    fn field_labels(&self) -> &[FieldLabel] {
        &self.field_labels
    }

    fn scale(&self, object: &Value) -> Option<Scale> {
        R::scale(&stored::<R::Object>(object)?)
    }

    fn is_stored(&self) -> bool {
        R::STORED
    }

    fn awaits_finalization(&self, object: &Value) -> bool {
        stored::<R::Object>(object).is_some_and(|o| R::awaits_finalization(&o))
    }
}
