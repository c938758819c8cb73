//! The directory in memory.

use crate::domain::{Group, GroupId, PhoneNumber, Stakeholder, StakeholderId};
use crate::error::Result;
use crate::ports::{Directory, DirectoryAdmin, GroupSummary};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::RwLock;

#[derive(Default)]
pub struct MemoryDirectory {
    groups: RwLock<HashMap<GroupId, Group>>,
    people: RwLock<HashMap<StakeholderId, Stakeholder>>,
}

impl MemoryDirectory {
    pub fn new(groups: Vec<Group>, people: Vec<Stakeholder>) -> Self {
        MemoryDirectory {
            groups: RwLock::new(groups.into_iter().map(|g| (g.id.clone(), g)).collect()),
            people: RwLock::new(people.into_iter().map(|p| (p.id.clone(), p)).collect()),
        }
    }
    pub fn upsert_stakeholder(&self, p: Stakeholder) {
        self.people
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p.id.clone(), p);
    }
    pub fn upsert_group(&self, g: Group) {
        self.groups
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(g.id.clone(), g);
    }
}

#[async_trait]
impl Directory for MemoryDirectory {
    async fn group(&self, id: &GroupId) -> Result<Option<GroupSummary>> {
        let g = self.groups.read().unwrap_or_else(|e| e.into_inner());
        Ok(g.get(id).map(|g| GroupSummary {
            id: g.id.clone(),
            name: g.name.clone(),
            on_call_manager: g.on_call_manager.clone(),
            escalation_channels: g.escalation_channels.clone(),
            size: g.members.len() as u32,
        }))
    }
    async fn members(&self, id: &GroupId) -> Result<Vec<StakeholderId>> {
        let g = self.groups.read().unwrap_or_else(|e| e.into_inner());
        Ok(g.get(id).map(|g| g.members.clone()).unwrap_or_default())
    }
    async fn stakeholder(&self, id: &StakeholderId) -> Result<Option<Stakeholder>> {
        Ok(self
            .people
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned())
    }
}

#[async_trait]
impl DirectoryAdmin for MemoryDirectory {
    async fn set_sms_opt_out(
        &self,
        number: &PhoneNumber,
        opted_out: bool,
    ) -> Result<Vec<StakeholderId>> {
        let mut people = self.people.write().unwrap_or_else(|e| e.into_inner());
        let mut changed: Vec<StakeholderId> = people
            .values_mut()
            .filter(|p| {
                p.contacts.sms.as_ref().or(p.contacts.phone.as_ref()) == Some(number)
                    && p.contacts.sms_opted_out != opted_out
            })
            .map(|p| {
                p.contacts.sms_opted_out = opted_out;
                p.id.clone()
            })
            .collect();
        changed.sort();
        Ok(changed)
    }
    async fn put_stakeholder(&self, person: Stakeholder) -> Result<()> {
        self.upsert_stakeholder(person);
        Ok(())
    }
    async fn find_by_user_name(&self, user_name: &str) -> Result<Vec<StakeholderId>> {
        let people = self.people.read().unwrap_or_else(|e| e.into_inner());
        Ok(crate::ports::with_user_name(people.values(), user_name))
    }
    async fn contains(&self, id: &StakeholderId) -> Result<bool> {
        Ok(self
            .people
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id))
    }
    async fn remove_stakeholder(&self, id: &StakeholderId) -> Result<bool> {
        let removed = self
            .people
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .is_some();
        for g in self
            .groups
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .values_mut()
        {
            g.members.retain(|m| m != id);
            if g.on_call_manager.as_ref() == Some(id) {
                g.on_call_manager = None;
            }
        }
        Ok(removed)
    }
    async fn list_stakeholders(&self) -> Result<Vec<Stakeholder>> {
        let mut v: Vec<_> = self
            .people
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }
    async fn get_group(&self, id: &GroupId) -> Result<Option<Group>> {
        Ok(self
            .groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned())
    }
    async fn put_group(&self, group: Group) -> Result<()> {
        self.upsert_group(group);
        Ok(())
    }
    async fn remove_group(&self, id: &GroupId) -> Result<bool> {
        Ok(self
            .groups
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .is_some())
    }
    async fn list_groups(&self) -> Result<Vec<Group>> {
        let mut v: Vec<_> = self
            .groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }
}
