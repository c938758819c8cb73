//! A directory from LDAP search results (`muster directory sync --ldap`):
//! people and groups as the server returned them, mapped attribute by
//! attribute onto the directory's fields and validated exactly like a
//! file (every problem named by the entry's DN and the attribute, nothing
//! produced unless all of it is valid). References in LDAP are DNs: a
//! person's manager, a group's members and its owner (the on-call
//! manager) are resolved to the ids of the entries they name; a DN that
//! names no person found is an error naming it.

use super::{Cell, DirectoryError, DirectoryFile, RawGroup, RawPerson, build};
use std::collections::{BTreeMap, HashMap};

/// One entry as searched: its DN and attributes (names in any case).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LdapEntry {
    pub dn: String,
    pub attrs: BTreeMap<String, Vec<String>>,
}

/// Which attribute holds each field. Person: `id`, `name`, `tier`,
/// `phone`, `sms`, `email`, `manager` (a DN); group: `group_id`,
/// `group_name`, `group_members` (DNs), `group_on_call` (a DN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapMapping {
    pub fields: BTreeMap<&'static str, String>,
}

/// The fields a mapping names, with their defaults (inetOrgPerson and
/// groupOfNames).
pub const LDAP_FIELDS: [(&str, &str); 11] = [
    ("id", "uid"),
    ("name", "cn"),
    ("tier", "employeeType"),
    ("phone", "telephoneNumber"),
    ("sms", "mobile"),
    ("email", "mail"),
    ("manager", "manager"),
    ("group_id", "cn"),
    ("group_name", "description"),
    ("group_members", "member"),
    ("group_on_call", "owner"),
];

impl Default for LdapMapping {
    fn default() -> Self {
        LdapMapping {
            fields: LDAP_FIELDS
                .iter()
                .map(|(f, a)| (*f, (*a).to_string()))
                .collect(),
        }
    }
}

impl LdapMapping {
    /// The defaults with `field=attribute` pairs (comma-separated) over
    /// them; an unknown field or an empty attribute is an error naming it.
    pub fn parse(spec: &str) -> Result<LdapMapping, String> {
        let mut m = LdapMapping::default();
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((field, attr)) = pair.split_once('=') else {
                return Err(format!("{pair:?}: expected field=attribute"));
            };
            let (field, attr) = (field.trim(), attr.trim());
            let Some((known, _)) = LDAP_FIELDS.iter().find(|(f, _)| *f == field) else {
                let names: Vec<&str> = LDAP_FIELDS.iter().map(|(f, _)| *f).collect();
                return Err(format!(
                    "{field:?}: unknown field (one of {})",
                    names.join(", ")
                ));
            };
            if attr.is_empty() || !attr.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(format!("{field}: {attr:?} is not an attribute name"));
            }
            m.fields.insert(known, attr.to_string());
        }
        Ok(m)
    }

    fn attr(&self, field: &str) -> &str {
        self.fields.get(field).map(String::as_str).unwrap_or("")
    }

    /// Every attribute a search must return.
    pub fn attributes(&self) -> Vec<String> {
        let mut v: Vec<String> = self.fields.values().cloned().collect();
        v.sort();
        v.dedup();
        v
    }
}

/// DNs compare without case and without spaces around separators.
fn dn_key(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| rdn.split('=').map(str::trim).collect::<Vec<_>>().join("="))
        .collect::<Vec<_>>()
        .join(",")
        .to_ascii_lowercase()
}

impl LdapEntry {
    fn values<'a>(&'a self, attr: &str) -> &'a [String] {
        self.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(attr))
            .map(|(_, v)| v.as_slice())
            .unwrap_or_default()
    }

    fn cell(&self, attr: &str) -> Option<Cell> {
        self.values(attr).first().map(|v| Cell {
            at: format!("{} ({attr})", self.dn),
            value: v.clone(),
        })
    }
}

/// The directory the entries describe.
pub fn from_ldap(
    people: &[LdapEntry],
    groups: &[LdapEntry],
    map: &LdapMapping,
) -> Result<DirectoryFile, Vec<DirectoryError>> {
    let id_attr = map.attr("id");
    let ids: HashMap<String, String> = people
        .iter()
        .filter_map(|p| Some((dn_key(&p.dn), p.values(id_attr).first()?.clone())))
        .collect();
    // A DN that names a person found becomes their id; one naming nobody is
    // an error of its own (the rest is still checked).
    let unknown = std::cell::RefCell::new(Vec::new());
    let resolve = |e: &LdapEntry, attr: &str, dn: &str| -> Option<Cell> {
        match ids.get(&dn_key(dn)) {
            Some(id) => Some(Cell {
                at: format!("{} ({attr})", e.dn),
                value: id.clone(),
            }),
            None => {
                unknown.borrow_mut().push(DirectoryError {
                    location: e.dn.clone(),
                    field: attr.to_string(),
                    value: dn.to_string(),
                    message: "names no person the people search found".into(),
                });
                None
            }
        }
    };
    let raw_people = people
        .iter()
        .map(|p| RawPerson {
            at: p.dn.clone(),
            id: p.cell(id_attr),
            name: p.cell(map.attr("name")),
            tier: p.cell(map.attr("tier")),
            phone: p.cell(map.attr("phone")),
            sms: p.cell(map.attr("sms")),
            email: p.cell(map.attr("email")),
            manager: p
                .values(map.attr("manager"))
                .first()
                .and_then(|dn| resolve(p, map.attr("manager"), dn)),
            ..Default::default()
        })
        .collect();
    let members = map.attr("group_members");
    let owner = map.attr("group_on_call");
    let raw_groups = groups
        .iter()
        .map(|g| RawGroup {
            at: g.dn.clone(),
            id: g.cell(map.attr("group_id")),
            name: g.cell(map.attr("group_name")),
            // groupOfNames needs a member even when empty: its own DN or
            // an empty value stands for nobody.
            members: g
                .values(members)
                .iter()
                .filter(|dn| !dn.trim().is_empty() && dn_key(dn) != dn_key(&g.dn))
                .filter_map(|dn| resolve(g, members, dn))
                .collect(),
            on_call_manager: g.values(owner).first().and_then(|dn| resolve(g, owner, dn)),
            escalation_channels: Vec::new(),
        })
        .collect::<Vec<_>>();
    let unknown = unknown.into_inner();
    match build(raw_people, raw_groups) {
        Ok(d) if unknown.is_empty() => Ok(d),
        Ok(_) => Err(unknown),
        Err(mut errs) => {
            errs.extend(unknown);
            Err(errs)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(dn: &str, attrs: &[(&str, &str)]) -> LdapEntry {
        let mut e = LdapEntry {
            dn: dn.into(),
            ..Default::default()
        };
        for (k, v) in attrs {
            e.attrs.entry((*k).into()).or_default().push((*v).into());
        }
        e
    }

    #[test]
    fn people_groups_managers_and_owners_resolve_from_dns() {
        let people = [
            entry(
                "uid=cio,ou=people,dc=example,dc=org",
                &[
                    ("uid", "cio"),
                    ("cn", "Chief Information Officer"),
                    ("employeeType", "1"),
                    ("telephoneNumber", "+44 20 7946 0001"),
                    ("mail", "cio@example.com"),
                ],
            ),
            entry(
                "uid=ana,ou=people,dc=example,dc=org",
                &[
                    ("uid", "ana"),
                    ("cn", "Ana"),
                    ("MAIL", "ana@example.com"),
                    ("manager", "UID=cio, OU=people, DC=example, DC=org"),
                ],
            ),
        ];
        let groups = [entry(
            "cn=ops,ou=groups,dc=example,dc=org",
            &[
                ("cn", "ops"),
                ("member", "uid=ana,ou=people,dc=example,dc=org"),
                ("member", "uid=cio,ou=people,dc=example,dc=org"),
                ("owner", "uid=cio,ou=people,dc=example,dc=org"),
            ],
        )];
        let d = from_ldap(&people, &groups, &LdapMapping::default()).unwrap();
        let ana = d
            .stakeholders
            .iter()
            .find(|p| p.id.as_str() == "ana")
            .unwrap();
        assert_eq!(ana.manager.as_ref().map(|m| m.as_str()), Some("cio"));
        let g = &d.groups[0];
        let members: Vec<&str> = g.members.iter().map(|m| m.as_str()).collect();
        assert_eq!(members, ["ana", "cio"]);
        assert_eq!(g.on_call_manager.as_ref().map(|m| m.as_str()), Some("cio"));
    }

    #[test]
    fn bad_entries_are_named_by_dn_and_attribute_and_nothing_is_made() {
        let people = [
            entry("uid=x,dc=org", &[("uid", "x"), ("telephoneNumber", "12")]),
            entry("uid=y,dc=org", &[("cn", "No id")]),
        ];
        let groups = [entry(
            "cn=g,dc=org",
            &[("cn", "g"), ("member", "uid=ghost,dc=org")],
        )];
        let errs = from_ldap(&people, &groups, &LdapMapping::default()).unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("uid=x,dc=org (telephoneNumber)")),
            "{text:?}"
        );
        assert!(text.iter().any(|t| t.contains("uid=y,dc=org")), "{text:?}");
        assert!(
            text.iter()
                .any(|t| t.contains("uid=ghost,dc=org") && t.contains("names no person")),
            "{text:?}"
        );
    }

    #[test]
    fn a_mapping_names_its_fields_or_is_refused() {
        let m = LdapMapping::parse("id=sAMAccountName, phone=ipPhone").unwrap();
        assert_eq!(m.attr("id"), "sAMAccountName");
        assert_eq!(m.attr("email"), "mail");
        assert!(
            LdapMapping::parse("colour=x")
                .unwrap_err()
                .contains("colour")
        );
        assert!(LdapMapping::parse("id=").is_err());
        assert!(LdapMapping::parse("id").is_err());
    }
}
