//! The API server's own request counters (`apiserver_request_total` on its
//! `/metrics`), for tests and benchmarks that count what a run wrote.

use std::collections::HashMap;

use kube::Client;

/// The API server's write requests so far, by verb, resource and
/// subresource (from its own `apiserver_request_total`).
pub async fn writes_so_far(client: &Client) -> anyhow::Result<HashMap<String, f64>> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let mut writes: HashMap<String, f64> = HashMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = |key: &str| label(labels, key).to_string();
        let verb = label("verb");
        if !matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE") {
            continue;
        }
        let resource = match label("subresource").as_str() {
            "" => label("resource"),
            sub => format!("{}/{sub}", label("resource")),
        };
        *writes.entry(format!("{verb} {resource}")).or_default() += value.parse().unwrap_or(0.0);
    }
    Ok(writes)
}

/// The value of label `key` in a Prometheus text line's `name{labels}` part
/// ("" without it). Matched after `{` or `,`, so `resource` is not found
/// inside `subresource`.
pub fn label<'a>(head: &'a str, key: &str) -> &'a str {
    ['{', ',']
        .iter()
        .find_map(|sep| head.split_once(&format!("{sep}{key}=\"")))
        .and_then(|(_, rest)| rest.split('"').next())
        .unwrap_or("")
}

/// How many writes `key` (e.g. `APPLY configmaps`) grew by from `before` to `after`.
pub fn grown(before: &HashMap<String, f64>, after: &HashMap<String, f64>, key: &str) -> f64 {
    after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn labels_are_found_by_their_whole_key() {
        let head = r#"apiserver_request_total{subresource="status",resource="mayastorpools",verb="APPLY"}"#;
        assert_eq!(label(head, "resource"), "mayastorpools");
        assert_eq!(label(head, "subresource"), "status");
        assert_eq!(label(head, "verb"), "APPLY");
        assert_eq!(label(head, "scope"), "");
    }
}
