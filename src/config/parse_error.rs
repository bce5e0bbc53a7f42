//! Why the configuration file does not parse, told without quoting it:
//! the line at fault may hold a password (a DSN with a missing quote, a
//! token written as a number), and the TOML library's own message shows
//! that line and the value it found. Instead: line, column, the key the
//! line sets, and the message with the offending value left out.

/// `error` of parsing `text`, placed by line, column and key.
pub(super) fn describe(text: &str, error: &toml::de::Error) -> String {
    let message = without_value(error.message().trim());
    match error.span() {
        Some(span) => format!("at {}: {message}", place(text, span.start)),
        None => message,
    }
}

/// `line L, column C (key `k`)` of byte `offset`; the key is what the
/// line's text before its first `=` names, if anything.
fn place(text: &str, offset: usize) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let key = text
        .lines()
        .nth(line - 1)
        .and_then(|l| l.split_once('='))
        .map(|(key, _)| key.trim())
        .filter(|key| !key.is_empty());
    match key {
        Some(key) => format!("line {line}, column {column} (key `{key}`)"),
        None => format!("line {line}, column {column}"),
    }
}

/// serde's `invalid type: integer `12345`, expected a string` quotes the
/// value it got, which may be a secret: keep its kind, drop the value.
fn without_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        let Some((got, expected)) = message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once(", expected"))
        else {
            continue;
        };
        let kind = got.split([' ', '`', '"']).next().unwrap_or_default();
        return format!("{prefix}{kind}, expected{expected}");
    }
    message.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        let error = toml::from_str::<toml::Table>(text)
            .err()
            .or_else(|| toml::from_str::<Typed>(text).err())
            .expect("an error");
        describe(text, &error)
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Typed {
        token: String,
    }

    #[test]
    fn a_broken_line_is_placed_by_key_and_never_quoted() {
        let text = "[landlord]\ndsn = \"host=db password=Typo-Pa55 dbname=x\n";
        let shown = error_of(text);
        assert!(!shown.contains("Typo-Pa55"), "{shown}");
        assert!(
            shown.contains("line 2") && shown.contains("`dsn`"),
            "{shown}"
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_is_not_repeated() {
        let shown = error_of("token = 12345678\n");
        assert!(!shown.contains("12345678"), "{shown}");
        assert!(
            shown.contains("invalid type: integer, expected a string") && shown.contains("`token`"),
            "{shown}"
        );
    }

    #[test]
    fn a_header_line_is_placed_without_a_key() {
        let shown = error_of("[landlord\n");
        assert!(shown.starts_with("at line 1, column"), "{shown}");
    }
}
