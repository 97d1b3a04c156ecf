//! Kubernetes resource quantities (`500m`, `1.5`, `64Mi`, `1G`, `1e3`) as millicores and bytes.

/// A CPU quantity in millicores (`500m` → 500, `2` → 2000).
pub(crate) fn cpu_millis(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Some(millis) = text.strip_suffix('m') {
        return millis.parse::<f64>().ok().map(|value| value.ceil() as u64);
    }
    text.parse::<f64>()
        .ok()
        .map(|cores| (cores * 1000.0).ceil() as u64)
}

/// A memory quantity in bytes (`64Mi`, `1G`, `128974848`, `129e6`).
pub(crate) fn bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    const SUFFIXES: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, factor) in SUFFIXES {
        if let Some(number) = text.strip_suffix(suffix) {
            return number
                .parse::<f64>()
                .ok()
                .map(|value| (value * factor).ceil() as u64);
        }
    }
    if let Some(millis) = text.strip_suffix('m') {
        return millis
            .parse::<f64>()
            .ok()
            .map(|value| (value / 1000.0).ceil() as u64);
    }
    text.parse::<f64>().ok().map(|value| value.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_as_kubernetes_writes_them() {
        assert_eq!(cpu_millis("500m"), Some(500));
        assert_eq!(cpu_millis("1.5"), Some(1500));
        assert_eq!(cpu_millis("2"), Some(2000));
        assert_eq!(bytes("64Mi"), Some(64 * 1024 * 1024));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("129e6"), Some(129_000_000));
        assert_eq!(bytes("1000"), Some(1000));
        assert_eq!(bytes("x"), None);
    }
}
