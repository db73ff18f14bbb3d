pub fn scheme_supported(s: &str) -> bool {
    matches!(s.to_ascii_uppercase().as_str(), "PLAIN" | "CLEARTEXT")
}
