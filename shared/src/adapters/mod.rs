pub mod emf;
pub mod gateways;
pub mod http_lookup;
pub mod memory;
pub mod notes;
pub mod siem;
