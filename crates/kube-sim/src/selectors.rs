//! Label and field selectors as list and watch requests send them.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector` plus `fieldSelector`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    labels: Vec<LabelReq>,
    fields: Vec<(String, bool, String)>,
}

/// A selector the simulator could not parse.
#[derive(Debug, thiserror::Error)]
#[error("unable to parse requirement {requirement:?} in {param}")]
pub struct SelectorError {
    pub param: &'static str,
    pub requirement: String,
}

/// Splits on commas outside parentheses: `a in (x,y),b=c` has two requirements.
fn split_top(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0i32);
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn set_values(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_string()).collect())
}

fn parse_label(req: &str) -> Option<LabelReq> {
    if let Some(key) = req.strip_prefix('!') {
        return Some(LabelReq::NotExists(key.trim().to_string()));
    }
    if let Some((k, v)) = req.split_once(" notin ") {
        return Some(LabelReq::NotIn(k.trim().into(), set_values(v)?));
    }
    if let Some((k, v)) = req.split_once(" in ") {
        return Some(LabelReq::In(k.trim().into(), set_values(v)?));
    }
    if let Some((k, v)) = req.split_once("!=") {
        return Some(LabelReq::NotEq(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
        return Some(LabelReq::Eq(k.trim().into(), v.trim().into()));
    }
    if req.contains(|c: char| c.is_whitespace() || "()=!".contains(c)) {
        return None;
    }
    Some(LabelReq::Exists(req.to_string()))
}

impl Selector {
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Self, SelectorError> {
        let mut sel = Selector::default();
        for req in split_top(labels.unwrap_or_default()) {
            sel.labels.push(parse_label(&req).ok_or(SelectorError {
                param: "labelSelector",
                requirement: req.clone(),
            })?);
        }
        for req in split_top(fields.unwrap_or_default()) {
            let parsed = if let Some((k, v)) = req.split_once("!=") {
                (k.to_string(), false, v.to_string())
            } else if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
                (k.to_string(), true, v.to_string())
            } else {
                return Err(SelectorError {
                    param: "fieldSelector",
                    requirement: req,
                });
            };
            sel.fields.push(parsed);
        }
        Ok(sel)
    }

    /// A selector from a Deployment's or Service's `matchLabels`-style map.
    pub fn from_labels(map: &serde_json::Map<String, Value>) -> Self {
        Selector {
            labels: map
                .iter()
                .map(|(k, v)| LabelReq::Eq(k.clone(), v.as_str().unwrap_or_default().into()))
                .collect(),
            fields: Vec::new(),
        }
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|req| match req {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|(path, eq, want)| {
                let pointer = format!("/{}", path.replace('.', "/"));
                let got = match obj.pointer(&pointer) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                (got == *want) == *eq
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_and_field_selectors_match_as_the_api_does() {
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "web", "tier": "a"}},
                         "involvedObject": {"name": "web"}});
        let yes = |l: &str, f: &str| Selector::parse(Some(l), Some(f)).unwrap().matches(&pod);
        assert!(yes("app=web,tier in (a,b)", "metadata.name=p"));
        assert!(yes("app==web,!missing,tier", "involvedObject.name=web"));
        assert!(!yes("app=api", ""));
        assert!(!yes("tier notin (a)", ""));
        assert!(!yes("", "metadata.name!=p"));
        assert!(Selector::parse(Some("a in b"), None).is_err());
        assert!(Selector::parse(None, Some("nonsense")).is_err());
    }
}
