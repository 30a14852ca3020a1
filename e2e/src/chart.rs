//! The chart's RBAC as a release renders it, for running the operator under it.

use serde_json::Value;
use std::path::Path;

/// The Namespace the rendered RBAC names (the chart's release namespace here).
pub const RELEASE_NAMESPACE: &str = "sluice-system";
/// The operator's ServiceAccount in a release.
pub const OPERATOR_ACCOUNT: &str = "sluice-operator";

/// `charts/sluice/templates/rbac.yaml` under `repo_root`, rendered for release
/// namespace [`RELEASE_NAMESPACE`] with the default values (no cert-manager).
/// Only the template constructs that file uses are understood; anything else is
/// an error, so a template change cannot silently widen or drop what the tests
/// run under (`make chart` renders the same file with Helm and runs the
/// operator under it too).
pub fn rbac(repo_root: &Path) -> Result<Vec<Value>, String> {
    let path = repo_root.join("charts/sluice/templates/rbac.yaml");
    let template =
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines: Vec<String> = Vec::new();
    for line in template.lines() {
        if line.contains(r#"{{- include "sluice.labels" . | nindent 4 }}"#) {
            // `labels:` followed by the chart's labels: drop both.
            if lines.last().is_some_and(|l| l.trim() == "labels:") {
                lines.pop();
            }
            continue;
        }
        let rendered = line
            .replace(r#"{{ include "sluice.name" . }}"#, OPERATOR_ACCOUNT)
            .replace(
                "{{ .Release.Namespace | quote }}",
                &format!("\"{RELEASE_NAMESPACE}\""),
            )
            .replace("{{ .Release.Namespace }}", RELEASE_NAMESPACE)
            .replace(
                "{{ if not .Values.certManager.enabled }}sluice-operator-tls, {{ end }}",
                "sluice-operator-tls, ",
            );
        if rendered.contains("{{") {
            return Err(format!(
                "{} uses a template construct this renderer does not know: {rendered}",
                path.display()
            ));
        }
        lines.push(rendered);
    }
    let mut out = Vec::new();
    // Empty documents are skipped.
    let text = lines.join("\n");
    for v in serde_saphyr::from_multiple::<Value>(&text)
        .map_err(|e| format!("rendered {}: {e}", path.display()))?
    {
        out.push(v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_the_chart_rbac() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let objects = super::rbac(&root).expect("renders");
        let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
        );
        assert_eq!(objects[2]["metadata"]["namespace"], "sluice-system");
        assert_eq!(
            objects[1]["subjects"][0],
            serde_json::json!({"kind": "ServiceAccount", "name": "sluice-operator", "namespace": "sluice-system"})
        );
    }
}
