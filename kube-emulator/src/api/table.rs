//! `meta.k8s.io/v1` `Table` responses (what `kubectl get` asks for): the columns and cells of
//! the server-side printers (see [`super::printers`]) plus, per row, the object as the request's
//! `includeObject` asks — `None`, `Metadata` (`PartialObjectMetadata`, the default) or `Object`
//! (the full object, which kubectl needs for `--sort-by` and columns outside `metadata`).

use serde_json::{json, Value};

use crate::conversion::from_storage;
use crate::error::ApiError;
use crate::resources::ResourceType;

pub use super::printers::human_age;

/// `TableOptions.includeObject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object in the rows (`"object": null`).
    None,
    /// `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    /// The whole object in the served version.
    Object,
}

impl IncludeObject {
    /// Parse the `includeObject` query parameter (absent or empty = `Metadata`); other values
    /// are the apiserver's 400.
    pub fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value.unwrap_or_default() {
            "" | "Metadata" => Ok(Self::Metadata),
            "None" => Ok(Self::None),
            "Object" => Ok(Self::Object),
            other => Err(ApiError::bad_request(format!(
                "unrecognized includeObject value: {other:?}"
            ))),
        }
    }
}

fn row_object(resource: &ResourceType, object: &Value, include: IncludeObject) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object["metadata"].clone()
        }),
        IncludeObject::Object => {
            let mut full = from_storage(resource, object);
            full["kind"] = json!(resource.kind);
            full["apiVersion"] = json!(resource.api_version());
            full
        }
    }
}

/// Build a Table for stored `objects`, embedding each row's object as `include` says.
pub fn table<T: std::borrow::Borrow<Value>>(
    resource: &ResourceType,
    objects: &[T],
    include: IncludeObject,
) -> Value {
    let (columns, row_fn) = super::printers::printer(resource);
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let o: &Value = o.borrow();
            let mut row = json!({"cells": row_fn(o), "object": row_object(resource, o, include)});
            if let Some(conditions) = super::printers::row_conditions(resource, o) {
                row["conditions"] = conditions;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": columns,
        "rows": rows
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_object_selects_what_each_row_embeds() {
        let pod = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": []}, "status": {"phase": "Succeeded"}});
        let pods = crate::resources::pods();
        let none = table(pods, &[&pod], IncludeObject::None);
        assert_eq!(none["rows"][0]["object"], Value::Null);
        let meta = table(pods, &[&pod], IncludeObject::Metadata);
        assert_eq!(meta["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert!(meta["rows"][0]["object"].get("status").is_none());
        let full = table(pods, &[&pod], IncludeObject::Object);
        assert_eq!(full["rows"][0]["object"]["kind"], "Pod");
        assert_eq!(full["rows"][0]["object"]["status"]["phase"], "Succeeded");
        assert_eq!(full["rows"][0]["conditions"][0]["type"], "Completed");
        assert_eq!(
            IncludeObject::parse(Some("All")).unwrap_err().message,
            "unrecognized includeObject value: \"All\""
        );
    }
}
