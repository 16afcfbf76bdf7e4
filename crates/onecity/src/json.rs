//! The proto3 JSON mapping of `onecity.v1` messages, for the CLI's input files and output.
//!
//! Generated prost types have no serde support, so JSON goes through prost-reflect: decode into
//! a `DynamicMessage` of the compiled descriptor set, then transcode to the prost type (and the
//! reverse for output). This gives exactly the canonical mapping (camelCase or original field
//! names, enum value names, int64 as string or number) with no hand-written serde per message.

use std::sync::OnceLock;

use anyhow::Context as _;
use onecity_proto::v1 as pb;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};
use serde::Serialize as _;

/// A prost message of `onecity.v1` with its fully qualified proto name.
pub trait ProtoName: prost::Message + Default {
    /// E.g. `onecity.v1.Application`.
    const NAME: &'static str;
}

macro_rules! proto_names {
    ($($t:ident),* $(,)?) => {
        $(impl ProtoName for pb::$t {
            const NAME: &'static str = concat!("onecity.v1.", stringify!($t));
        })*
    };
}

proto_names!(
    Application,
    SubmitApplicationResponse,
    GetCaseResponse,
    WatchCaseResponse,
    WithdrawApplicationResponse,
    AmendApplicationResponse,
    FindCasesResponse,
    ScreenResponse,
    GetPolicyResponse,
    ListReferralsResponse,
    StreamReferralsResponse,
    AcknowledgeReferralResponse,
    RecordDecisionResponse,
    TransferReferralResponse,
    RequestInformationResponse,
    ProvideInformationResponse,
    RecordedEvent,
    ListQuarantinedResponse,
    RetryQuarantinedResponse,
    ListAccessResponse,
    GetRoutingLagResponse,
    GetPolicyImpactResponse,
    ReportSignalResponse,
    ListWarningsResponse,
    ResolveWarningResponse,
    GetStatisticsResponse,
);

/// Every `onecity.v1` descriptor (decoded once).
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // The descriptor set is produced by our own build script from the same protos as the
        // prost types, so failing to decode it is a build defect, not a runtime condition.
        DescriptorPool::decode(onecity_proto::FILE_DESCRIPTOR_SET)
            .expect("embedded descriptor set decodes")
    })
}

fn descriptor(name: &str) -> anyhow::Result<prost_reflect::MessageDescriptor> {
    pool()
        .get_message_by_name(name)
        .with_context(|| format!("message {name} is not in the descriptor set"))
}

/// Parses proto3 JSON into `T`; unknown fields are an error (a misspelt field would otherwise
/// silently become its default).
pub fn from_json<T: ProtoName>(text: &str) -> anyhow::Result<T> {
    let desc = descriptor(T::NAME)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let message = DynamicMessage::deserialize_with_options(
        desc,
        &mut de,
        &DeserializeOptions::new().deny_unknown_fields(true),
    )
    .map_err(|e| anyhow::anyhow!("not a valid {} in JSON: {e}", T::NAME))?;
    de.end()
        .map_err(|e| anyhow::anyhow!("trailing characters after the JSON object: {e}"))?;
    message
        .transcode_to::<T>()
        .with_context(|| format!("transcode {}", T::NAME))
}

/// `msg` as a JSON value in the proto3 mapping: camelCase names in .proto order, enum names,
/// default values omitted. 64-bit integers are printed as numbers rather than the canonical strings, because
/// people read this output and every onecity amount fits a double exactly; the input side
/// accepts both.
pub fn to_value<T: ProtoName>(msg: &T) -> anyhow::Result<serde_json::Value> {
    let mut dynamic = DynamicMessage::new(descriptor(T::NAME)?);
    dynamic
        .transcode_from(msg)
        .with_context(|| format!("transcode {}", T::NAME))?;
    dynamic_to_value(&dynamic)
}

fn dynamic_to_value(dynamic: &DynamicMessage) -> anyhow::Result<serde_json::Value> {
    let options = SerializeOptions::new().stringify_64_bit_integers(false);
    let mut value = dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .context("render message as JSON")?;
    sort_maps(&mut value, false);
    Ok(value)
}

/// JSON names of every map field in the descriptor set (`parameters`, `inputs`, ...).
fn map_field_names() -> &'static std::collections::HashSet<String> {
    static NAMES: OnceLock<std::collections::HashSet<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        pool()
            .all_messages()
            .flat_map(|m| m.fields().collect::<Vec<_>>())
            .filter(|f| f.is_map())
            .map(|f| f.json_name().to_owned())
            .collect()
    })
}

/// Sorts the keys of proto map fields (which come out in hash order) so that output is stable
/// and district codes or parameter names read in order; message fields keep .proto order.
fn sort_maps(value: &mut serde_json::Value, is_map: bool) {
    match value {
        serde_json::Value::Object(object) => {
            if is_map {
                object.sort_keys();
            }
            for (key, v) in object.iter_mut() {
                sort_maps(v, !is_map && map_field_names().contains(key));
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                sort_maps(v, false);
            }
        }
        _ => {}
    }
}

/// `msg` as pretty-printed JSON (see [`to_value`]).
pub fn to_json<T: ProtoName>(msg: &T) -> anyhow::Result<String> {
    Ok(pretty(&to_value(msg)?))
}

/// Pretty-prints a JSON value.
pub fn pretty(value: &serde_json::Value) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut out,
        serde_json::ser::PrettyFormatter::with_indent(b"  "),
    );
    // Serializing a `Value` into memory cannot fail.
    if value.serialize(&mut ser).is_err() {
        return value.to_string();
    }
    String::from_utf8(out).unwrap_or_else(|_| value.to_string())
}

/// A log event as JSON, with its protobuf payload decoded by event type (e.g.
/// `onecity.v1.ApplicationSubmitted`) into an `event` object; a payload of a type this binary
/// does not know stays base64 under `payload`.
pub fn recorded_event_to_value(event: &pb::RecordedEvent) -> anyhow::Result<serde_json::Value> {
    let value = to_value(event)?;
    let decoded = pool()
        .get_message_by_name(&event.event_type)
        .and_then(|desc| DynamicMessage::decode(desc, event.payload.as_slice()).ok());
    let (Some(decoded), serde_json::Value::Object(envelope)) = (decoded, &value) else {
        return Ok(value);
    };
    // Rebuilt rather than edited in place, so `event` takes the place of `payload` and the
    // envelope keeps its proto field order.
    let mut out = serde_json::Map::with_capacity(envelope.len());
    for (key, v) in envelope {
        if key == "payload" {
            out.insert("event".to_owned(), dynamic_to_value(&decoded)?);
        } else {
            out.insert(key.clone(), v.clone());
        }
    }
    Ok(serde_json::Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_accepts_camel_case_and_proto_names() {
        let camel = r#"{
            "districtCode": "120103",
            "members": [{"idNumber": "x", "relationship": "RELATIONSHIP_APPLICANT",
                         "monthlyIncomeFen": "150000", "disability": {"kind": "DISABILITY_KIND_VISUAL", "grade": 2}}],
            "housing": "HOUSING_RENTING",
            "financialAssetsFen": 800000,
            "applicationDate": "2026-03-02"
        }"#;
        let proto_names = r#"{
            "district_code": "120103",
            "members": [{"id_number": "x", "relationship": "RELATIONSHIP_APPLICANT",
                         "monthly_income_fen": 150000, "disability": {"kind": "DISABILITY_KIND_VISUAL", "grade": 2}}],
            "housing": "HOUSING_RENTING",
            "financial_assets_fen": "800000",
            "application_date": "2026-03-02"
        }"#;
        let a: pb::Application = from_json(camel).unwrap();
        let b: pb::Application = from_json(proto_names).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.housing, pb::Housing::Renting as i32);
        assert_eq!(a.members[0].monthly_income_fen, 150_000);
        assert_eq!(
            a.members[0].disability.as_ref().map(|d| d.kind),
            Some(pb::DisabilityKind::Visual as i32)
        );
    }

    /// `onecity case` prints each referral's basis and cancel reason.
    #[test]
    fn a_case_shows_the_basis_and_the_cancel_reason() {
        let case = pb::GetCaseResponse {
            case: Some(pb::Case {
                referrals: vec![pb::Referral {
                    programme: pb::Programme::Medical as i32,
                    state: pb::ReferralState::Cancelled as i32,
                    basis: pb::ReferralBasis::RecognitionDenied as i32,
                    basis_unit: "civil-affairs@120103".into(),
                    basis_decided_on: "2026-12-04".into(),
                    cancel_reason: "recognition denied by civil-affairs@120103 on 2026-12-04"
                        .into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        };
        let text = to_json(&case).unwrap();
        for want in [
            r#""basis": "REFERRAL_BASIS_RECOGNITION_DENIED""#,
            r#""basisUnit": "civil-affairs@120103""#,
            r#""basisDecidedOn": "2026-12-04""#,
            r#""cancelReason": "recognition denied by civil-affairs@120103 on 2026-12-04""#,
        ] {
            assert!(text.contains(want), "{want} missing from {text}");
        }
    }

    #[test]
    fn unknown_fields_and_enum_names_are_errors() {
        let err = from_json::<pb::Application>(r#"{"districtCod": "120103"}"#).unwrap_err();
        assert!(err.to_string().contains("districtCod"), "{err}");
        let err = from_json::<pb::Application>(r#"{"housing": "RENTING"}"#).unwrap_err();
        assert!(err.to_string().contains("RENTING"), "{err}");
        assert!(from_json::<pb::Application>("{} {}").is_err());
        assert!(from_json::<pb::Application>("[]").is_err());
    }

    #[test]
    fn output_uses_names_and_plain_numbers() {
        let resp = pb::ScreenResponse {
            assessments: vec![pb::Assessment {
                programme: pb::Programme::Dibao as i32,
                outcome: pb::Outcome::Eligible as i32,
                amount_fen: 107_000,
                ..Default::default()
            }],
        };
        let v = to_value(&resp).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"assessments": [{
                "programme": "PROGRAMME_DIBAO", "outcome": "OUTCOME_ELIGIBLE", "amountFen": 107000
            }]})
        );
        assert!(to_json(&resp).unwrap().contains("\n  \"assessments\""));
    }

    #[test]
    fn message_fields_keep_proto_order_and_map_keys_are_sorted() {
        let resp = pb::GetPolicyResponse {
            policy: Some(pb::Policy {
                version_id: "2026-07".into(),
                effective_from: "2026-07-01".into(),
                parameters: [("b", 2), ("a", 1), ("c", 3)]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                district_standards: [("120119", 1), ("120101", 2)]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
            }),
        };
        let v = to_value(&resp).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            v.as_object().unwrap().keys().cloned().collect()
        };
        let policy = &v["policy"];
        assert_eq!(
            keys(policy),
            [
                "versionId",
                "effectiveFrom",
                "parameters",
                "districtStandards"
            ]
        );
        assert_eq!(keys(&policy["parameters"]), ["a", "b", "c"]);
        assert_eq!(keys(&policy["districtStandards"]), ["120101", "120119"]);
    }

    #[test]
    fn recorded_event_payload_is_decoded() {
        use prost::Message as _;
        let payload = pb::ApplicationWithdrawn {
            reason: "moved away".to_owned(),
        }
        .encode_to_vec();
        let event = pb::RecordedEvent {
            metadata: Default::default(),
            event_type: "onecity.v1.ApplicationWithdrawn".to_owned(),
            position: 7,
            payload,
            appended_by: "service:intake".to_owned(),
            ..Default::default()
        };
        let v = recorded_event_to_value(&event).unwrap();
        assert_eq!(v["event"]["reason"], "moved away");
        // `onecity log tail` shows who appended the commit.
        assert_eq!(v["appendedBy"], "service:intake");
        assert_eq!(v["position"], 7);
        assert!(v.get("payload").is_none());

        let unknown = pb::RecordedEvent {
            metadata: Default::default(),
            event_type: "test.Unknown".to_owned(),
            payload: vec![1, 2, 3],
            ..Default::default()
        };
        let v = recorded_event_to_value(&unknown).unwrap();
        assert_eq!(v["payload"], "AQID");
    }
}
