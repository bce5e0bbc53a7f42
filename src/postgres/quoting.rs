//! Quoting names and literals for the few places where SQL is built.

/// Quotes an identifier for SQL (`"my ""table"""`).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a possibly schema-qualified name given as `schema.table` or `table`.
pub fn quote_qualified(name: &str) -> String {
    match name.split_once('.') {
        Some((schema, table)) if !name.starts_with('"') => {
            format!("{}.{}", quote_ident(schema), quote_ident(table))
        }
        _ => quote_ident(name),
    }
}

/// Quotes a string literal (for the few places where a parameter cannot be bound).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_awkward_identifiers() {
        assert_eq!(quote_ident("Mixed Case"), "\"Mixed Case\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(
            quote_qualified("public.tenant_brandings"),
            "\"public\".\"tenant_brandings\""
        );
        assert_eq!(quote_qualified("tenant_brandings"), "\"tenant_brandings\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
