//! Decoding the Kubernetes protobuf envelope (`application/vnd.kubernetes.protobuf`) for the
//! kinds kubectl's typed generators send as protobuf (`kubectl create namespace|serviceaccount|
//! secret|configmap|token|job|deployment`, `kubectl auth can-i [--list]`, `kubectl drain`'s
//! Evictions), turning them into the JSON the
//! rest of the server speaks. Only the fields those generators set are decoded (the field
//! numbers of k8s.io/api's generated.proto); other kinds get 415.

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// The envelope magic: `k8s\0`.
const MAGIC: &[u8] = b"k8s\x00";

/// How a protobuf field maps to JSON.
#[derive(Clone, Copy)]
enum Field {
    Str(&'static str),
    Int(&'static str),
    Bool(&'static str),
    Message(&'static str, &'static [(u64, Field)]),
    RepeatedStr(&'static str),
    RepeatedMessage(&'static str, &'static [(u64, Field)]),
    MapStr(&'static str),
    MapBytes(&'static str),
}

const OBJECT_META: &[(u64, Field)] = &[
    (1, Field::Str("name")),
    (2, Field::Str("generateName")),
    (3, Field::Str("namespace")),
    (11, Field::MapStr("labels")),
    (12, Field::MapStr("annotations")),
    (14, Field::RepeatedStr("finalizers")),
];
const LOCAL_OBJECT_REFERENCE: &[(u64, Field)] = &[(1, Field::Str("name"))];
const NAMESPACE: &[(u64, Field)] = &[
    (1, Field::Message("metadata", OBJECT_META)),
    (
        2,
        Field::Message("spec", &[(1, Field::RepeatedStr("finalizers"))]),
    ),
];
const SERVICE_ACCOUNT: &[(u64, Field)] = &[
    (1, Field::Message("metadata", OBJECT_META)),
    (
        3,
        Field::RepeatedMessage("imagePullSecrets", LOCAL_OBJECT_REFERENCE),
    ),
    (4, Field::Bool("automountServiceAccountToken")),
];
const SECRET: &[(u64, Field)] = &[
    (1, Field::Message("metadata", OBJECT_META)),
    (2, Field::MapBytes("data")),
    (3, Field::Str("type")),
    (4, Field::MapStr("stringData")),
    (5, Field::Bool("immutable")),
];
const CONFIG_MAP: &[(u64, Field)] = &[
    (1, Field::Message("metadata", OBJECT_META)),
    (2, Field::MapStr("data")),
    (3, Field::MapBytes("binaryData")),
    (4, Field::Bool("immutable")),
];
const TOKEN_REQUEST: &[(u64, Field)] = &[
    (1, Field::Message("metadata", OBJECT_META)),
    (
        2,
        Field::Message(
            "spec",
            &[
                (1, Field::RepeatedStr("audiences")),
                (4, Field::Int("expirationSeconds")),
            ],
        ),
    ),
];
const LABEL_SELECTOR: &[(u64, Field)] = &[(1, Field::MapStr("matchLabels"))];
const ENV_VAR: &[(u64, Field)] = &[(1, Field::Str("name")), (2, Field::Str("value"))];
const CONTAINER: &[(u64, Field)] = &[
    (1, Field::Str("name")),
    (2, Field::Str("image")),
    (3, Field::RepeatedStr("command")),
    (4, Field::RepeatedStr("args")),
    (5, Field::Str("workingDir")),
    (7, Field::RepeatedMessage("env", ENV_VAR)),
    (13, Field::Str("terminationMessagePath")),
    (14, Field::Str("imagePullPolicy")),
    (20, Field::Str("terminationMessagePolicy")),
];
const POD_SPEC: &[(u64, Field)] = &[
    (2, Field::RepeatedMessage("containers", CONTAINER)),
    (3, Field::Str("restartPolicy")),
    (4, Field::Int("terminationGracePeriodSeconds")),
    (5, Field::Int("activeDeadlineSeconds")),
    (6, Field::Str("dnsPolicy")),
    (7, Field::MapStr("nodeSelector")),
    (8, Field::Str("serviceAccountName")),
    (9, Field::Str("serviceAccount")),
    (20, Field::RepeatedMessage("initContainers", CONTAINER)),
];
const POD_TEMPLATE_SPEC: &[(u64, Field)] = &[
    (1, Field::Message("metadata", OBJECT_META)),
    (2, Field::Message("spec", POD_SPEC)),
];
const JOB: &[(u64, Field)] = &[
    (1, Field::Message("metadata", OBJECT_META)),
    (
        2,
        Field::Message(
            "spec",
            &[
                (1, Field::Int("parallelism")),
                (2, Field::Int("completions")),
                (3, Field::Int("activeDeadlineSeconds")),
                (6, Field::Message("template", POD_TEMPLATE_SPEC)),
                (7, Field::Int("backoffLimit")),
                (8, Field::Int("ttlSecondsAfterFinished")),
                (10, Field::Bool("suspend")),
            ],
        ),
    ),
];
const DEPLOYMENT: &[(u64, Field)] = &[
    (1, Field::Message("metadata", OBJECT_META)),
    (
        2,
        Field::Message(
            "spec",
            &[
                (1, Field::Int("replicas")),
                (2, Field::Message("selector", LABEL_SELECTOR)),
                (3, Field::Message("template", POD_TEMPLATE_SPEC)),
            ],
        ),
    ),
];
const RESOURCE_ATTRIBUTES: &[(u64, Field)] = &[
    (1, Field::Str("namespace")),
    (2, Field::Str("verb")),
    (3, Field::Str("group")),
    (4, Field::Str("version")),
    (5, Field::Str("resource")),
    (6, Field::Str("subresource")),
    (7, Field::Str("name")),
];
const SELF_SUBJECT_ACCESS_REVIEW: &[(u64, Field)] = &[
    (1, Field::Message("metadata", OBJECT_META)),
    (
        2,
        Field::Message(
            "spec",
            &[
                (1, Field::Message("resourceAttributes", RESOURCE_ATTRIBUTES)),
                (
                    2,
                    Field::Message(
                        "nonResourceAttributes",
                        &[(1, Field::Str("path")), (2, Field::Str("verb"))],
                    ),
                ),
            ],
        ),
    ),
];

const SELF_SUBJECT_RULES_REVIEW: &[(u64, Field)] = &[
    (1, Field::Message("metadata", OBJECT_META)),
    (2, Field::Message("spec", &[(1, Field::Str("namespace"))])),
];
const DELETE_OPTIONS: &[(u64, Field)] = &[
    (1, Field::Int("gracePeriodSeconds")),
    (
        2,
        Field::Message(
            "preconditions",
            &[(1, Field::Str("uid")), (2, Field::Str("resourceVersion"))],
        ),
    ),
    (3, Field::Bool("orphanDependents")),
    (4, Field::Str("propagationPolicy")),
    (5, Field::RepeatedStr("dryRun")),
];
const EVICTION: &[(u64, Field)] = &[
    (1, Field::Message("metadata", OBJECT_META)),
    (2, Field::Message("deleteOptions", DELETE_OPTIONS)),
];

fn malformed() -> ApiError {
    ApiError::bad_request("the body of the request was in an unknown format: malformed protobuf")
}

/// A cursor over protobuf wire data.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.data.get(self.pos).ok_or_else(malformed)?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed())
    }

    fn bytes(&mut self) -> Result<&'a [u8], ApiError> {
        let len = usize::try_from(self.varint()?).map_err(|_| malformed())?;
        let end = self.pos.checked_add(len).ok_or_else(malformed)?;
        let slice = self.data.get(self.pos..end).ok_or_else(malformed)?;
        self.pos = end;
        Ok(slice)
    }

    /// Next `(field number, wire type)`, or `None` at the end.
    fn key(&mut self) -> Result<Option<(u64, u64)>, ApiError> {
        if self.pos >= self.data.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        Ok(Some((key >> 3, key & 7)))
    }

    fn skip(&mut self, wire_type: u64) -> Result<(), ApiError> {
        match wire_type {
            0 => self.varint().map(|_| ()),
            1 => self.advance(8),
            2 => self.bytes().map(|_| ()),
            5 => self.advance(4),
            _ => Err(malformed()),
        }
    }

    fn advance(&mut self, n: usize) -> Result<(), ApiError> {
        let end = self.pos.checked_add(n).ok_or_else(malformed)?;
        if end > self.data.len() {
            return Err(malformed());
        }
        self.pos = end;
        Ok(())
    }
}

fn text(bytes: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed())
}

/// A map entry message: key = 1, value = 2.
fn map_entry(bytes: &[u8], value_is_bytes: bool) -> Result<(String, Value), ApiError> {
    let mut reader = Reader {
        data: bytes,
        pos: 0,
    };
    let mut key = String::new();
    let mut value = Value::String(String::new());
    while let Some((field, wire)) = reader.key()? {
        match (field, wire) {
            (1, 2) => key = text(reader.bytes()?)?,
            (2, 2) => {
                let raw = reader.bytes()?;
                value = if value_is_bytes {
                    json!(base64::engine::general_purpose::STANDARD.encode(raw))
                } else {
                    json!(text(raw)?)
                };
            }
            (_, wire) => reader.skip(wire)?,
        }
    }
    Ok((key, value))
}

fn message(bytes: &[u8], schema: &[(u64, Field)]) -> Result<Value, ApiError> {
    let mut reader = Reader {
        data: bytes,
        pos: 0,
    };
    let mut out = Map::new();
    while let Some((number, wire)) = reader.key()? {
        let Some((_, field)) = schema.iter().find(|(n, _)| *n == number) else {
            reader.skip(wire)?;
            continue;
        };
        match (*field, wire) {
            (Field::Str(name), 2) => {
                // Go's generated marshallers write empty non-pointer strings; empty means unset.
                let value = text(reader.bytes()?)?;
                if !value.is_empty() {
                    out.insert(name.into(), json!(value));
                }
            }
            (Field::Int(name), 0) => {
                out.insert(name.into(), json!(reader.varint()? as i64));
            }
            (Field::Bool(name), 0) => {
                out.insert(name.into(), json!(reader.varint()? != 0));
            }
            (Field::Message(name, inner), 2) => {
                out.insert(name.into(), message(reader.bytes()?, inner)?);
            }
            (Field::RepeatedStr(name), 2) => {
                let item = json!(text(reader.bytes()?)?);
                push(&mut out, name, item);
            }
            (Field::RepeatedMessage(name, inner), 2) => {
                let item = message(reader.bytes()?, inner)?;
                push(&mut out, name, item);
            }
            (Field::MapStr(name), 2) | (Field::MapBytes(name), 2) => {
                let is_bytes = matches!(field, Field::MapBytes(_));
                let (key, value) = map_entry(reader.bytes()?, is_bytes)?;
                let entry = out.entry(name).or_insert_with(|| json!({}));
                if let Some(map) = entry.as_object_mut() {
                    map.insert(key, value);
                }
            }
            (_, wire) => reader.skip(wire)?,
        }
    }
    Ok(Value::Object(out))
}

fn push(out: &mut Map<String, Value>, name: &str, item: Value) {
    let entry = out.entry(name).or_insert_with(|| json!([]));
    if let Some(list) = entry.as_array_mut() {
        list.push(item);
    }
}

/// Decode a protobuf request body into JSON. Kinds we cannot decode yield 415.
pub fn decode(body: &[u8], content_type: &str) -> Result<Value, ApiError> {
    let payload = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| ApiError::unsupported_body_type(content_type))?;
    let mut reader = Reader {
        data: payload,
        pos: 0,
    };
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    while let Some((field, wire)) = reader.key()? {
        match (field, wire) {
            (1, 2) => {
                let type_meta = message(
                    reader.bytes()?,
                    &[(1, Field::Str("apiVersion")), (2, Field::Str("kind"))],
                )?;
                api_version = type_meta["apiVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                kind = type_meta["kind"].as_str().unwrap_or_default().to_string();
            }
            (2, 2) => raw = reader.bytes()?,
            (_, wire) => reader.skip(wire)?,
        }
    }
    let schema = match kind.as_str() {
        "Namespace" => NAMESPACE,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "Secret" => SECRET,
        "ConfigMap" => CONFIG_MAP,
        "TokenRequest" => TOKEN_REQUEST,
        "SelfSubjectAccessReview" => SELF_SUBJECT_ACCESS_REVIEW,
        "SelfSubjectRulesReview" => SELF_SUBJECT_RULES_REVIEW,
        "Eviction" => EVICTION,
        // client-go's typed clients (Helm's release storage among them) send
        // the body of a DELETE as protobuf too.
        "DeleteOptions" => DELETE_OPTIONS,
        "Job" => JOB,
        "Deployment" => DEPLOYMENT,
        _ => return Err(ApiError::unsupported_body_type(content_type)),
    };
    let mut object = message(raw, schema)?;
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((number << 3) | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decodes_a_namespace_envelope() {
        let meta = field(1, b"flows");
        let namespace = field(1, &meta);
        let mut type_meta = field(1, b"v1");
        type_meta.extend(field(2, b"Namespace"));
        let mut unknown = field(1, &type_meta);
        unknown.extend(field(2, &namespace));
        let mut body = MAGIC.to_vec();
        body.extend(unknown);
        let decoded = decode(&body, "application/vnd.kubernetes.protobuf").unwrap();
        assert_eq!(decoded["kind"], "Namespace");
        assert_eq!(decoded["metadata"]["name"], "flows");
    }

    #[test]
    fn decodes_delete_options() {
        let mut options = vec![(1 << 3) as u8, 30];
        options.extend(field(4, b"Background"));
        options.extend(field(5, b"All"));
        let mut type_meta = field(1, b"v1");
        type_meta.extend(field(2, b"DeleteOptions"));
        let mut unknown = field(1, &type_meta);
        unknown.extend(field(2, &options));
        let mut body = MAGIC.to_vec();
        body.extend(unknown);
        let decoded = decode(&body, "application/vnd.kubernetes.protobuf").unwrap();
        assert_eq!(decoded["kind"], "DeleteOptions");
        assert_eq!(decoded["gracePeriodSeconds"], 30);
        assert_eq!(decoded["propagationPolicy"], "Background");
        assert_eq!(decoded["dryRun"], json!(["All"]));
    }

    #[test]
    fn garbage_is_rejected_not_panicked_on() {
        assert!(decode(
            b"k8s\x00\xff\xff\xff",
            "application/vnd.kubernetes.protobuf"
        )
        .is_err());
        assert!(decode(b"nope", "application/vnd.kubernetes.protobuf").is_err());
    }
}
