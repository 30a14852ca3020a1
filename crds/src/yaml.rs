//! Reading YAML the way every Sluice binary does: serde-saphyr (what kube-client
//! itself uses; serde_yaml is deprecated), with its default budgets (events,
//! nesting, aliases: a hostile document cannot exhaust memory), duplicate keys
//! refused (a second `action:` in a rule is an error, not the winner), and
//! errors that name the line and column but quote no input, since the text may
//! be a Secret or a settings file holding a webhook token.

use serde::de::DeserializeOwned;

/// The error a YAML text gives; its message names the line and column.
pub type Error = serde_saphyr::Error;

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        with_snippet: false,
    }
}

/// Decodes one YAML document.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    serde_saphyr::from_str_with_options(text, options())
}

/// Decodes every non-empty document of a multi-document YAML text (documents
/// separated by `---`; empty and `null` documents are skipped), in order. An
/// error comes with the 1-based index of the document it is in, counting the
/// non-empty documents before it.
pub fn documents<T: DeserializeOwned>(text: &str) -> Result<Vec<T>, (usize, Error)> {
    let mut reader = std::io::Cursor::new(text.as_bytes());
    let mut docs = Vec::new();
    for doc in serde_saphyr::read_with_options(&mut reader, options()) {
        docs.push(doc.map_err(|error| (docs.len() + 1, error))?);
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_and_errors_quote_no_input() {
        let text = "rules:\n- action: allow\n  action: deny # s3cr3t\n";
        let error = from_str::<serde_json::Value>(text).unwrap_err().to_string();
        assert!(error.contains("action"), "{error}");
        assert!(error.contains("line 3"), "{error}");
        assert!(
            !error.contains("s3cr3t"),
            "the error quotes the input: {error}"
        );
    }

    #[test]
    fn documents_skip_empty_ones() {
        let docs: Vec<serde_json::Value> = documents("---\na: 1\n---\n---\nb: 2\n").unwrap();
        assert_eq!(
            docs,
            vec![serde_json::json!({"a": 1}), serde_json::json!({"b": 2})]
        );
    }

    #[test]
    fn documents_name_the_bad_one() {
        let (index, error) =
            documents::<serde_json::Value>("a: 1\n---\nb: 2\n---\nc: [\n").unwrap_err();
        assert_eq!(index, 3, "{error}");
        let (index, _) = documents::<serde_json::Value>("a: 1\n---\nb: 2\n  c: 3\n").unwrap_err();
        assert_eq!(index, 2);
    }

    #[test]
    fn alias_bombs_are_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(from_str::<serde_json::Value>(&text).is_err());
    }
}
