//! Discovery documents: `/version`, `/api`, `/apis`, `/api/v1` and `/apis/{group}/{version}`
//! (legacy `APIVersions`/`APIGroupList`/`APIResourceList`) and the aggregated discovery v2
//! `APIGroupDiscoveryList` served when the `Accept` header asks for it.

use serde_json::{json, Value};

use crate::resources::{self, ResourceType, RESOURCES};

/// The Kubernetes version we claim to be.
pub fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "36",
        "emulationMajor": "1",
        "emulationMinor": "36",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "35",
        "gitVersion": "v1.36.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-04-01T00:00:00Z",
        "goVersion": "go1.25.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// `GET /api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

fn group_entry(group: &str) -> Value {
    let version = RESOURCES
        .iter()
        .find(|r| r.group == group)
        .map_or("v1", |r| r.version);
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `GET /apis`.
pub fn group_list() -> Value {
    let groups: Vec<Value> = resources::api_groups()
        .into_iter()
        .map(group_entry)
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}`; `None` when the group is not served.
pub fn group(group: &str) -> Option<Value> {
    if !resources::api_groups().contains(&group) {
        return None;
    }
    let mut entry = group_entry(group);
    entry["kind"] = json!("APIGroup");
    entry["apiVersion"] = json!("v1");
    Some(entry)
}

/// `GET /api/v1` or `/apis/{group}/{version}`; `None` when not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let members: Vec<&ResourceType> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if members.is_empty() {
        return None;
    }
    let mut entries = Vec::new();
    for r in &members {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        entries.push(entry);
        for sub in r.subresources {
            let (kind, verbs): (&str, Vec<&str>) = match *sub {
                "status" => (r.kind, vec!["get", "patch", "update"]),
                "log" => ("Pod", vec!["get"]),
                "binding" => ("Binding", vec!["create"]),
                "eviction" => ("Eviction", vec!["create"]),
                "finalize" => ("Namespace", vec!["update"]),
                "token" => ("TokenRequest", vec!["create"]),
                _ => (r.kind, vec!["get"]),
            };
            let mut entry = json!({
                "name": format!("{}/{}", r.plural, sub),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if *sub == "eviction" {
                entry["group"] = json!("policy");
                entry["version"] = json!("v1");
            }
            if *sub == "token" {
                entry["group"] = json!("authentication.k8s.io");
                entry["version"] = json!("v1");
            }
            entries.push(entry);
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": entries
    }))
}

/// The media type of aggregated discovery v2 responses.
pub const AGGREGATED_V2_MEDIA_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether an `Accept` header prefers aggregated discovery (v2). We only speak v2; clients that
/// list only v2beta1 fall through to the legacy document, as a server without v2beta1 would.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let part = part.replace(' ', "");
        part.contains("g=apidiscovery.k8s.io")
            && part.contains("v=v2")
            && !part.contains("v=v2beta1")
            && part.contains("as=APIGroupDiscoveryList")
    })
}

fn discovery_resources(group: &str) -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group)
        .map(|r| {
            let subresources: Vec<Value> = r
                .subresources
                .iter()
                .map(|sub| {
                    let (kind_group, kind_version, kind, verbs): (&str, &str, &str, Vec<&str>) = match *sub {
                        "status" => (r.group, r.version, r.kind, vec!["get", "patch", "update"]),
                        "log" => ("", "v1", "Pod", vec!["get"]),
                        "binding" => ("", "v1", "Binding", vec!["create"]),
                        "eviction" => ("policy", "v1", "Eviction", vec!["create"]),
                        "finalize" => ("", "v1", "Namespace", vec!["update"]),
                        "token" => ("authentication.k8s.io", "v1", "TokenRequest", vec!["create"]),
                        _ => (r.group, r.version, r.kind, vec!["get"]),
                    };
                    json!({
                        "subresource": sub,
                        "responseKind": {"group": kind_group, "version": kind_version, "kind": kind},
                        "verbs": verbs
                    })
                })
                .collect();
            let mut entry = json!({
                "resource": r.plural,
                "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": r.singular,
                "verbs": r.verbs,
            });
            if !r.short_names.is_empty() {
                entry["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                entry["categories"] = json!(r.categories);
            }
            if !subresources.is_empty() {
                entry["subresources"] = json!(subresources);
            }
            entry
        })
        .collect();
    json!(resources)
}

/// Aggregated discovery for `/api` (core) or `/apis` (all groups).
pub fn aggregated(core: bool) -> Value {
    let items: Vec<Value> = if core {
        vec![json!({
            "metadata": {"creationTimestamp": null},
            "versions": [{"version": "v1", "resources": discovery_resources(""), "freshness": "Current"}]
        })]
    } else {
        resources::api_groups()
            .into_iter()
            .map(|group| {
                let version = RESOURCES.iter().find(|r| r.group == group).map_or("v1", |r| r.version);
                json!({
                    "metadata": {"name": group, "creationTimestamp": null},
                    "versions": [{"version": version, "resources": discovery_resources(group), "freshness": "Current"}]
                })
            })
            .collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items
    })
}

/// `GET /openapi/v3`: the index of per-group-version documents.
pub fn openapi_v3_index() -> Value {
    let mut paths = serde_json::Map::new();
    paths.insert(
        "api/v1".into(),
        json!({"serverRelativeURL": "/openapi/v3/api/v1?hash=emulator"}),
    );
    for group in resources::api_groups() {
        let version = RESOURCES
            .iter()
            .find(|r| r.group == group)
            .map_or("v1", |r| r.version);
        let key = format!("apis/{group}/{version}");
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash=emulator")}),
        );
    }
    json!({"paths": paths})
}

/// `GET /openapi/v3/<api|apis/group>/<version>`: an OpenAPI v3 document with the operations
/// and query parameters clients probe (kubectl checks `fieldValidation` support on PATCH
/// operations tagged with `x-kubernetes-group-version-kind`) and the kinds' schemas (what
/// `kubectl explain` reads). PATCH operations declare no request bodies, so kubectl apply keeps
/// computing strategic merge patches from its built-in types.
pub fn openapi_v3_document(group: &str, version: &str) -> Option<Value> {
    let members: Vec<&ResourceType> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if members.is_empty() {
        return None;
    }
    let query = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let prefix = if group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{group}/{version}")
    };
    let mut paths = serde_json::Map::new();
    for r in members {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let (collection, item) = if r.namespaced {
            (
                format!("{prefix}/namespaces/{{namespace}}/{}", r.plural),
                format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
            )
        } else {
            (
                format!("{prefix}/{}", r.plural),
                format!("{prefix}/{}/{{name}}", r.plural),
            )
        };
        let op = |action: &str, params: Vec<Value>| {
            json!({
                "operationId": format!("{action}{}", r.kind),
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        paths.insert(collection, json!({
            "get": op("list", vec![query("labelSelector"), query("fieldSelector"), query("limit"), query("continue"), query("watch")]),
            "post": op("post", vec![query("dryRun"), query("fieldManager"), query("fieldValidation")]),
            "delete": op("deletecollection", vec![query("labelSelector"), query("fieldSelector")]),
        }));
        paths.insert(item, json!({
            "get": op("get", vec![]),
            "put": op("put", vec![query("dryRun"), query("fieldManager"), query("fieldValidation")]),
            "patch": op("patch", vec![query("dryRun"), query("fieldManager"), query("fieldValidation"), query("force")]),
            "delete": op("delete", vec![query("dryRun"), query("gracePeriodSeconds"), query("propagationPolicy")]),
        }));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.36.0"},
        "paths": paths,
        "components": {"schemas": *super::openapi::schemas(group, version)}
    }))
}
