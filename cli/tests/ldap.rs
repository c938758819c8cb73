//! `muster directory sync --ldap` against a real OpenLDAP server: Debian's
//! slapd, started on loopback for each test by `scripts/ldap-server`
//! (StartTLS and LDAPS with a test CA, binds only as the admin) and loaded
//! with tests/fixtures/ldap/directory.ldif.
#![allow(clippy::unwrap_used)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const ADMIN: &str = "cn=admin,dc=example,dc=org";

struct Slapd {
    child: Child,
    dir: PathBuf,
    ldap: u16,
    ldaps: u16,
}

impl Drop for Slapd {
    fn drop(&mut self) {
        // SIGTERM to `timeout`, which passes it on to slapd (a SIGKILL
        // would leave slapd running without it).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

impl Slapd {
    fn start() -> Slapd {
        assert!(
            std::path::Path::new("/usr/sbin/slapd").exists(),
            "slapd is not installed: apt-get install slapd ldap-utils (scripts/test does)"
        );
        let dir = std::env::temp_dir().join(format!("muster-slapd-{}", free_port()));
        let (ldap, ldaps) = (free_port(), free_port());
        let child = Command::new("timeout")
            .arg("600")
            .arg("bash")
            .arg(root().join("scripts/ldap-server"))
            .arg(&dir)
            .arg(ldap.to_string())
            .arg(ldaps.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("scripts/ldap-server");
        let s = Slapd {
            child,
            dir,
            ldap,
            ldaps,
        };
        // Bounded: slapd listens within a second or two.
        let up = (0..200).any(|_| {
            let ok = TcpStream::connect(("127.0.0.1", ldaps)).is_ok()
                && TcpStream::connect(("127.0.0.1", ldap)).is_ok();
            if !ok {
                std::thread::sleep(Duration::from_millis(50));
            }
            ok
        });
        assert!(up, "slapd did not start on {ldap}/{ldaps}");
        s.add(&std::fs::read_to_string(root().join("tests/fixtures/ldap/directory.ldif")).unwrap());
        s
    }

    fn password(&self) -> String {
        std::fs::read_to_string(self.dir.join("password"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn ldapmodify(&self, args: &[&str], ldif: &str) {
        use std::io::Write;
        let url = format!("ldap://127.0.0.1:{}", self.ldap);
        let mut child = Command::new("ldapmodify")
            .args(["-x", "-H", &url, "-D", ADMIN, "-w", &self.password()])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("ldapmodify (ldap-utils)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ldif.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "ldapmodify {args:?}");
    }

    fn add(&self, ldif: &str) {
        self.ldapmodify(&["-a"], ldif);
    }

    fn sync(&self, url: &str, extra: &[&str], password: &str, into: &std::path::Path) -> Output {
        let ca = self.dir.join("ca.pem");
        Command::new(env!("CARGO_BIN_EXE_muster"))
            .args([
                "directory",
                "sync",
                "--ldap",
                url,
                "--base",
                "dc=example,dc=org",
            ])
            .arg("--ca-file")
            .arg(&ca)
            .arg("--into")
            .arg(into)
            .args(extra)
            .env("MUSTER_LDAP_BIND_DN", ADMIN)
            .env("MUSTER_LDAP_PASSWORD", password)
            .output()
            .unwrap()
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn directory(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_directory_synced_over_starttls_or_ldaps_is_the_servers_people_and_groups() {
    let s = Slapd::start();
    let out = s.dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let starttls = out.join("starttls.json");
    let ldaps = out.join("ldaps.json");
    // More people than slapd answers in one search (its size limit is 500):
    // the sync reads them a page at a time.
    let mut many = String::new();
    let mut group = String::from(
        "dn: cn=everyone,ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\n\
         cn: everyone\nowner: uid=cio,ou=people,dc=example,dc=org\n",
    );
    for i in 1..=600 {
        many.push_str(&format!(
            "dn: uid=p{i},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\n\
             uid: p{i}\ncn: Person {i}\nsn: {i}\nmail: p{i}@example.org\n\n"
        ));
        group.push_str(&format!("member: uid=p{i},ou=people,dc=example,dc=org\n"));
    }
    s.add(&many);
    s.add(&group);
    let o = s.sync(
        &format!("ldap://127.0.0.1:{}", s.ldap),
        &["--starttls"],
        &s.password(),
        &starttls,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("603 stakeholders, 2 groups"),
        "{}",
        text(&o)
    );
    let o = s.sync(
        &format!("ldaps://127.0.0.1:{}", s.ldaps),
        &[],
        &s.password(),
        &ldaps,
    );
    assert!(o.status.success(), "{}", text(&o));
    let d = directory(&starttls);
    assert_eq!(d, directory(&ldaps), "one directory whichever TLS");
    let person = |id: &str| {
        d["stakeholders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no {id} in {d}"))
    };
    let ana = person("ana");
    assert_eq!(ana["name"], "Ana Lima");
    assert_eq!(ana["tier"], 2);
    assert_eq!(ana["manager"], "cio", "the manager's DN becomes their id");
    assert_eq!(person("ben")["manager"], "ana");
    let s_ana = ana.to_string();
    assert!(
        s_ana.contains("+12025550102") && s_ana.contains("ana@example.org"),
        "{s_ana}"
    );
    let group = |id: &str| {
        d["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no group {id} in {d}"))
    };
    assert_eq!(group("everyone")["members"].as_array().unwrap().len(), 600);
    let g = &group("ops-leadership");
    assert_eq!(g["members"], serde_json::json!(["ana", "ben"]));
    assert_eq!(g["on_call_manager"], "cio");
}

#[test]
fn a_sync_refuses_the_clear_a_wrong_password_and_a_bad_entry_and_changes_nothing() {
    let s = Slapd::start();
    let into = s.dir.join("directory.json");
    let url = format!("ldap://127.0.0.1:{}", s.ldap);
    let o = s.sync(&url, &["--starttls"], &s.password(), &into);
    assert!(o.status.success(), "{}", text(&o));
    let before = std::fs::read(&into).unwrap();

    // No TLS: the password would cross the network in the clear.
    let o = s.sync(&url, &[], &s.password(), &into);
    assert!(!o.status.success());
    assert!(text(&o).contains("in the clear"), "{}", text(&o));
    // A wrong password is refused by the server and named as the bind.
    let o = s.sync(&url, &["--starttls"], "not-the-password", &into);
    assert!(!o.status.success());
    assert!(text(&o).contains("bind refused"), "{}", text(&o));
    assert!(!text(&o).contains("not-the-password"), "{}", text(&o));
    // A bind DN without a password would be an unauthenticated bind.
    let o = s.sync(&url, &["--starttls"], "", &into);
    assert!(!o.status.success());
    assert!(text(&o).contains("MUSTER_LDAP_PASSWORD"), "{}", text(&o));
    // A search that finds nobody (here a base with no one under it) does
    // not replace the directory with an empty one.
    let o = s.sync(
        &url,
        &["--starttls", "--filter", "(uid=nobody-at-all)"],
        &s.password(),
        &into,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("found 0 people"), "{}", text(&o));
    // A person whose number is not in international form: the whole sync
    // is refused, naming the entry and its attribute.
    s.add(
        "dn: uid=eve,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\n\
         uid: eve\ncn: Eve\nsn: Eve\ntelephoneNumber: (202) 555-0199\n",
    );
    let o = s.sync(&url, &["--starttls"], &s.password(), &into);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("uid=eve,ou=people,dc=example,dc=org (telephoneNumber)"),
        "{}",
        text(&o)
    );
    // A mapping naming an unknown field is refused before any connection.
    let o = s.sync(
        &url,
        &["--starttls", "--map", "colour=x"],
        &s.password(),
        &into,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("colour"), "{}", text(&o));
    assert_eq!(std::fs::read(&into).unwrap(), before, "nothing changed");
}
