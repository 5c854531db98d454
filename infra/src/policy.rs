//! IAM policy documents as types, serialized in AWS's JSON shape. Parsing accepts
//! AWS's either-string-or-list fields, so a live document and a desired one compare
//! after `normalized()`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDocument {
    #[serde(rename = "Version")]
    pub version: String,
    #[serde(rename = "Statement")]
    pub statement: Vec<Statement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Statement {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    pub effect: Effect,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<BTreeMap<String, OneOrMany>>,
    pub action: OneOrMany,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<OneOrMany>,
    /// operator -> condition key -> values
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub condition: BTreeMap<String, BTreeMap<String, OneOrMany>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    Allow,
    Deny,
}

/// A value IAM writes as a string when single and as a list otherwise.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct OneOrMany(pub Vec<String>);

impl Serialize for OneOrMany {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::One(s) => Self(vec![s]),
            Raw::Many(v) => Self(v),
        })
    }
}

impl<S: Into<String>> FromIterator<S> for OneOrMany {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        Self(iter.into_iter().map(Into::into).collect())
    }
}

impl PolicyDocument {
    pub fn new(statement: Vec<Statement>) -> Self {
        Self {
            version: "2012-10-17".into(),
            statement,
        }
    }

    /// A role trust policy letting `service` assume the role, limited to calls made on
    /// behalf of `account` (the confused-deputy guard AWS recommends).
    pub fn trust(service: &str, account: &str) -> Self {
        let mut statement = Statement::allow(None, ["sts:AssumeRole"], None::<[&str; 0]>);
        statement.principal = Some(BTreeMap::from([(
            "Service".to_owned(),
            OneOrMany(vec![service.to_owned()]),
        )]));
        Self::new(vec![statement.when(
            "StringEquals",
            "aws:SourceAccount",
            [account],
        )])
    }

    /// The same policy with every list sorted and deduplicated and statements in a
    /// stable order, so documents that mean the same compare equal.
    #[must_use]
    pub fn normalized(&self) -> Self {
        let norm = |v: &OneOrMany| {
            let mut v = v.0.clone();
            v.sort();
            v.dedup();
            OneOrMany(v)
        };
        let mut statement: Vec<Statement> = self
            .statement
            .iter()
            .map(|s| Statement {
                sid: s.sid.clone(),
                effect: s.effect,
                principal: s
                    .principal
                    .as_ref()
                    .map(|p| p.iter().map(|(k, v)| (k.clone(), norm(v))).collect()),
                action: norm(&s.action),
                resource: s.resource.as_ref().map(norm),
                condition: s
                    .condition
                    .iter()
                    .map(|(op, m)| {
                        (
                            op.clone(),
                            m.iter().map(|(k, v)| (k.clone(), norm(v))).collect(),
                        )
                    })
                    .collect(),
            })
            .collect();
        statement.sort_by_key(|s| serde_json::to_string(s).unwrap_or_default());
        Self {
            version: self.version.clone(),
            statement,
        }
    }
}

impl Statement {
    pub fn allow<A, R>(sid: Option<&str>, actions: A, resources: Option<R>) -> Self
    where
        A: IntoIterator,
        A::Item: Into<String>,
        R: IntoIterator,
        R::Item: Into<String>,
    {
        Self {
            sid: sid.map(str::to_owned),
            effect: Effect::Allow,
            principal: None,
            action: actions.into_iter().collect(),
            resource: resources.map(|r| r.into_iter().collect()),
            condition: BTreeMap::new(),
        }
    }

    #[must_use]
    pub fn when<V>(mut self, operator: &str, key: &str, values: V) -> Self
    where
        V: IntoIterator,
        V::Item: Into<String>,
    {
        self.condition
            .entry(operator.to_owned())
            .or_default()
            .insert(key.to_owned(), values.into_iter().collect());
        self
    }

    /// Every action this statement allows, for tests and the IAM change table.
    pub fn actions(&self) -> &[String] {
        &self.action.0
    }

    pub fn resources(&self) -> &[String] {
        self.resource.as_ref().map_or(&[], |r| &r.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_values_serialize_as_strings_and_parse_back_from_either_form() {
        let doc = PolicyDocument::new(vec![Statement::allow(
            Some("Read"),
            ["s3:GetObject"],
            Some(["arn:aws:s3:::b/*", "arn:aws:s3:::c/*"]),
        )]);
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["Statement"][0]["Action"], "s3:GetObject");
        assert_eq!(json["Statement"][0]["Resource"][1], "arn:aws:s3:::c/*");
        let back: PolicyDocument = serde_json::from_value(json).unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn normalized_documents_ignore_order_and_duplicates() {
        let a = PolicyDocument::new(vec![
            Statement::allow(None, ["b", "a"], Some(["r"])),
            Statement::allow(None, ["c"], Some(["r2", "r1", "r1"])),
        ]);
        let b = PolicyDocument::new(vec![
            Statement::allow(None, ["c"], Some(["r1", "r2"])),
            Statement::allow(None, ["a", "b"], Some(["r"])),
        ]);
        assert_ne!(a, b);
        assert_eq!(a.normalized(), b.normalized());
    }
}
