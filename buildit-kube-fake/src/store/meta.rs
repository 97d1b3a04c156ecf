//! What the API server fills in and checks in `metadata`: uids, generated names, timestamps, name rules.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

/// The current time (jiff's own clock needs a feature the tree does not enable).
pub fn now() -> Timestamp {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    i128::try_from(nanos)
        .ok()
        .and_then(|nanos| Timestamp::from_nanosecond(nanos).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Lowercase letters and digits as Kubernetes uses them for generated name suffixes (no vowels, as the real
/// server does, so no words are spelled by chance).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0_u8; N];
    // Without random bytes from the system the time still varies between calls: good enough for names.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = now().as_nanosecond();
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = (nanos >> ((index % 16) * 8)) as u8 ^ index as u8;
        }
    }
    bytes
}

/// A random version-4 UUID, as object uids are.
pub fn new_uid() -> String {
    let mut bytes = random_bytes::<16>();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// `length` random characters for a generated name.
pub fn random_suffix(length: usize) -> String {
    let bytes = random_bytes::<32>();
    bytes
        .iter()
        .take(length)
        .map(|byte| char::from(SUFFIX_ALPHABET[usize::from(*byte) % SUFFIX_ALPHABET.len()]))
        .collect()
}

/// Now, as the API server writes times (`2026-12-07T13:05:40Z`).
pub fn now_rfc3339() -> String {
    format_seconds(now())
}

/// A time with seconds precision, as `metav1.Time` is written.
pub fn format_seconds(timestamp: Timestamp) -> String {
    k8s_openapi::jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", timestamp)
        .unwrap_or_else(|_| timestamp.to_string())
}

/// A time with nanoseconds, as log timestamps and `MicroTime` are written (always nine digits).
pub fn format_nanos(timestamp: Timestamp) -> String {
    k8s_openapi::jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%S.%9fZ", timestamp)
        .unwrap_or_else(|_| timestamp.to_string())
}

/// Why `name` is not a valid DNS-1123 subdomain (what most objects' names must be), if it is not.
pub fn invalid_subdomain(name: &str) -> Option<String> {
    const ADVICE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
        '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for \
        validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    if name.is_empty() {
        return Some("name or generateName is required".to_owned());
    }
    if name.len() > 253 {
        return Some("must be no more than 253 characters".to_owned());
    }
    let valid = name.split('.').all(|part| {
        !part.is_empty()
            && part
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
            && !part.starts_with('-')
            && !part.ends_with('-')
    });
    (!valid).then(|| ADVICE.to_owned())
}

/// The text at `metadata.<field>` of an object, if any.
pub fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

/// The labels of an object (empty when it has none).
pub fn labels(object: &Value) -> std::collections::BTreeMap<String, String> {
    object
        .get("metadata")
        .and_then(|metadata| metadata.get("labels"))
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_look_like_uuids() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(uid.as_bytes()[14], b'4');
        assert_ne!(uid, new_uid());
    }

    #[test]
    fn subdomains_are_checked() {
        assert!(invalid_subdomain("build-1.x").is_none());
        assert!(invalid_subdomain("Build").is_some());
        assert!(invalid_subdomain("-a").is_some());
        assert!(invalid_subdomain("").is_some());
    }

    #[test]
    fn nanosecond_times_have_nine_digits() {
        let timestamp: Timestamp = "2026-12-07T13:05:40.1Z"
            .parse()
            .unwrap_or(Timestamp::UNIX_EPOCH);
        assert_eq!(format_nanos(timestamp), "2026-12-07T13:05:40.100000000Z");
    }
}
