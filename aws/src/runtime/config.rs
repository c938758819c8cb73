//! The functions' configuration, from the environment variables of the
//! deployment contract (docs/functions.md). Loading fails fast with one
//! error that names every missing or invalid variable, never its value.

use muster::policy::Policy;
use muster::secret::Secret;
use std::fmt;

/// Which function is loading: each requires its own variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Trigger,
    Dispatch,
    Receipt,
    Tick,
}

impl Function {
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Trigger => "trigger",
            Function::Dispatch => "dispatch",
            Function::Receipt => "receipt",
            Function::Tick => "tick",
        }
    }
}

/// Every variable the contract names, with the functions that require it
/// (empty: optional everywhere).
pub const VARIABLES: [(&str, &[Function]); 38] = {
    use Function::*;
    const ALL: &[Function] = &[Trigger, Dispatch, Receipt, Tick];
    [
        ("MUSTER_STAGE", ALL),
        ("MUSTER_STATE_TABLE", ALL),
        ("MUSTER_AUDIT_TABLE", ALL),
        ("MUSTER_DIRECTORY_TABLE", ALL),
        ("MUSTER_DISPATCH_QUEUE_URL", ALL),
        ("MUSTER_PRIORITY_QUEUE_URL", ALL),
        ("MUSTER_TIMER_QUEUE_URL", ALL),
        ("MUSTER_TIMER_QUEUE_ARN", ALL),
        ("MUSTER_SCHEDULER_GROUP", ALL),
        ("MUSTER_SCHEDULER_ROLE_ARN", ALL),
        ("MUSTER_PII_KEY_ID", ALL),
        ("MUSTER_SEAL_KEY_ID", &[Trigger, Tick]),
        ("MUSTER_API_BASE_URL", &[Dispatch]),
        ("MUSTER_ACK_SECRET", &[Trigger, Dispatch, Receipt, Tick]),
        ("MUSTER_WEBHOOK_SECRET", &[Receipt]),
        ("MUSTER_SCIM_TOKEN", &[]),
        ("MUSTER_SES_FROM", &[Dispatch]),
        ("MUSTER_SES_CONFIGURATION_SET", &[Dispatch]),
        ("MUSTER_SMS_ORIGINATION", &[]),
        ("MUSTER_SMS_CONFIGURATION_SET", &[]),
        ("MUSTER_POLICY_FILE", &[]),
        ("MUSTER_CHIME_SMA_ID", &[]),
        ("MUSTER_CHIME_FROM_NUMBER", &[]),
        ("MUSTER_PUSH_ENABLED", &[]),
        ("MUSTER_SNS_TOPIC_ARNS", &[Receipt]),
        ("MUSTER_CONTACT_LOOKUP_URL", &[]),
        ("MUSTER_CONTACT_LOOKUP_TOKEN", &[]),
        ("MUSTER_AUDIT_ARCHIVE_BUCKET", &[Tick]),
        ("MUSTER_AUDIT_RETENTION_DAYS", &[]),
        ("MUSTER_POLICY", &[]),
        ("MUSTER_BOARD_SIGN_IN_URL", &[]),
        ("MUSTER_BOARD_CLIENT_ID", &[]),
        ("MUSTER_BOARD_URL", &[]),
        ("MUSTER_INTEGRATION_SECRETS", &[]),
        ("MUSTER_CLOUDWATCH_TOPIC_ARNS", &[]),
        ("MUSTER_WRITEBACK", &[]),
        ("MUSTER_SIEM", &[]),
        ("MUSTER_GATEWAYS", &[]),
    ]
};

/// Default audit retention in DynamoDB, days.
pub const DEFAULT_RETENTION_DAYS: u32 = 180;

/// The configuration. A variable a function does not require may be absent
/// (empty string when it is, so that wiring never has to guess).
#[derive(Clone)]
pub struct Config {
    pub function: Function,
    pub stage: String,
    pub state_table: String,
    pub audit_table: String,
    pub directory_table: String,
    pub dispatch_queue_url: String,
    /// The work queue's priority lane (escalation jobs).
    pub priority_queue_url: String,
    pub timer_queue_url: String,
    pub timer_queue_arn: String,
    pub scheduler_group: String,
    pub scheduler_role_arn: String,
    pub pii_key_id: String,
    pub seal_key_id: Option<String>,
    pub api_base_url: Option<String>,
    pub ack_secret: Option<Secret>,
    pub webhook_secret: Option<Secret>,
    pub scim_token: Option<Secret>,
    pub ses_from: Option<String>,
    pub ses_configuration_set: Option<String>,
    /// End User Messaging SMS origination identity (number, pool or sender id).
    pub sms_origination: Option<crate::senders::Origination>,
    /// End User Messaging SMS configuration set (delivery events).
    pub sms_configuration_set: Option<String>,
    /// Voice: both the SIP media application and the caller id, or neither.
    pub chime: Option<(String, String)>,
    pub push_enabled: bool,
    pub sns_topic_arns: Vec<String>,
    /// Incident sources' secrets (`MUSTER_INTEGRATION_SECRETS`, a JSON
    /// object of source to secret), served at `/v1/integrations/{source}`.
    pub integration_secrets: Vec<(&'static str, Secret)>,
    /// SNS topics of CloudWatch alarms that may declare incidents.
    pub cloudwatch_topic_arns: Vec<String>,
    /// Write-back to incidents' origins (`MUSTER_WRITEBACK`, the JSON of
    /// [`muster::adapters::notes::HttpNotes::from_json`]), checked here.
    pub write_back: Option<Secret>,
    /// SIEM receivers of the audit trail (`MUSTER_SIEM`, the JSON of
    /// [`muster::adapters::siem::from_json`]), checked here.
    pub siem: Option<Secret>,
    /// Twilio and SendGrid, chosen per channel (`MUSTER_GATEWAYS`, the
    /// JSON of [`muster::adapters::gateways::from_json`]), checked here.
    pub gateways: Option<Secret>,
    pub contact_lookup_url: Option<String>,
    pub contact_lookup_token: Option<Secret>,
    pub audit_archive_bucket: Option<String>,
    pub audit_retention_days: u32,
    /// The policy: `MUSTER_POLICY` (TOML text) or the file
    /// `MUSTER_POLICY_FILE` (a layer's, for a policy of any size), else the
    /// defaults.
    pub policy: Policy,
    /// The incident board's sign-in (Cognito hosted UI, PKCE):
    /// `MUSTER_BOARD_SIGN_IN_URL` (the user pool domain), `_CLIENT_ID` (the
    /// board's public app client) and `MUSTER_BOARD_URL` (its callback),
    /// all three or none.
    pub board: Option<muster::api::board::CognitoSignIn>,
}

/// Scopes the board asks for: status, trigger and close (the caller's
/// roles come from its user pool groups).
pub const BOARD_SCOPES: [&str; 3] = ["openid", "muster/incidents.read", "muster/incidents.write"];

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets print as Secret(••••); nothing here is a contact detail.
        f.debug_struct("Config")
            .field("function", &self.function)
            .field("stage", &self.stage)
            .field("state_table", &self.state_table)
            .field("audit_table", &self.audit_table)
            .field("directory_table", &self.directory_table)
            .field("dispatch_queue_url", &self.dispatch_queue_url)
            .field("priority_queue_url", &self.priority_queue_url)
            .field("timer_queue_url", &self.timer_queue_url)
            .field("voice", &self.chime.is_some())
            .field("push_enabled", &self.push_enabled)
            .field("contact_lookup", &self.contact_lookup_url.is_some())
            .field("scim", &self.scim_token.is_some())
            .field("board", &self.board.is_some())
            .field("write_back", &self.write_back.is_some())
            .field("siem", &self.siem.is_some())
            .field("gateways", &self.gateways.is_some())
            .finish_non_exhaustive()
    }
}

/// One problem with one variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarProblem {
    pub name: &'static str,
    pub problem: String,
}

/// Every problem found, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub function: &'static str,
    pub problems: Vec<VarProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "muster-{} cannot start: {} environment variable(s) to fix: ",
            self.function,
            self.problems.len()
        )?;
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{} {}", p.name, p.problem)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

struct Reader<'a, F: Fn(&str) -> Option<String>> {
    function: Function,
    lookup: &'a F,
    problems: Vec<VarProblem>,
}

impl<F: Fn(&str) -> Option<String>> Reader<'_, F> {
    fn required_here(&self, name: &str) -> bool {
        VARIABLES
            .iter()
            .any(|(n, fs)| *n == name && fs.contains(&self.function))
    }

    fn problem(&mut self, name: &'static str, problem: impl Into<String>) {
        self.problems.push(VarProblem {
            name,
            problem: problem.into(),
        });
    }

    /// The trimmed value, `None` when absent or blank; a problem when this
    /// function requires it.
    fn get(&mut self, name: &'static str) -> Option<String> {
        let v = (self.lookup)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        if v.is_none() && self.required_here(name) {
            self.problem(name, "is missing");
        }
        v
    }

    /// A required-everywhere value (empty string after a recorded problem).
    fn must(&mut self, name: &'static str) -> String {
        self.get(name).unwrap_or_default()
    }

    fn url(&mut self, name: &'static str) -> Option<String> {
        let v = self.get(name)?;
        if v.starts_with("https://") || v.starts_with("http://") {
            Some(v)
        } else {
            self.problem(name, "is not an http(s) URL");
            None
        }
    }

    fn arn(&mut self, name: &'static str) -> String {
        let v = self.must(name);
        if !v.is_empty() && !v.starts_with("arn:") {
            self.problem(name, "is not an ARN");
        }
        v
    }

    fn secret(&mut self, name: &'static str) -> Option<Secret> {
        let v = self.get(name)?;
        if v.len() < 16 {
            self.problem(name, "is shorter than 16 characters");
            return None;
        }
        Some(Secret::new(v))
    }
}

impl Config {
    /// Reads the configuration of `function` through `lookup` (the process
    /// environment: `|name| std::env::var(name).ok()`).
    pub fn from_lookup(
        function: Function,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut r = Reader {
            function,
            lookup: &lookup,
            problems: Vec::new(),
        };
        let stage = r.must("MUSTER_STAGE");
        if !stage.is_empty()
            && !stage
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            r.problem("MUSTER_STAGE", "may hold only letters, digits, - and _");
        }
        let state_table = r.must("MUSTER_STATE_TABLE");
        let audit_table = r.must("MUSTER_AUDIT_TABLE");
        let directory_table = r.must("MUSTER_DIRECTORY_TABLE");
        let dispatch_queue_url = r.url("MUSTER_DISPATCH_QUEUE_URL").unwrap_or_default();
        let priority_queue_url = r.url("MUSTER_PRIORITY_QUEUE_URL").unwrap_or_default();
        let timer_queue_url = r.url("MUSTER_TIMER_QUEUE_URL").unwrap_or_default();
        let timer_queue_arn = r.arn("MUSTER_TIMER_QUEUE_ARN");
        let scheduler_group = r.must("MUSTER_SCHEDULER_GROUP");
        let scheduler_role_arn = r.arn("MUSTER_SCHEDULER_ROLE_ARN");
        let pii_key_id = r.must("MUSTER_PII_KEY_ID");
        let seal_key_id = r.get("MUSTER_SEAL_KEY_ID");
        let api_base_url = r.url("MUSTER_API_BASE_URL");
        let ack_secret = r.secret("MUSTER_ACK_SECRET");
        let webhook_secret = r.secret("MUSTER_WEBHOOK_SECRET");
        let scim_token = r.secret("MUSTER_SCIM_TOKEN");
        let ses_from = r.get("MUSTER_SES_FROM");
        if let Some(from) = &ses_from
            && muster::domain::EmailAddress::parse(from).is_err()
        {
            r.problem("MUSTER_SES_FROM", "is not an email address");
        }
        let ses_configuration_set = r.get("MUSTER_SES_CONFIGURATION_SET");
        let sms_origination =
            r.get("MUSTER_SMS_ORIGINATION")
                .and_then(|o| match crate::senders::Origination::parse(&o) {
                    Ok(o) => Some(o),
                    Err(e) => {
                        r.problem("MUSTER_SMS_ORIGINATION", e);
                        None
                    }
                });
        let sms_configuration_set = r.get("MUSTER_SMS_CONFIGURATION_SET");
        let sma = r.get("MUSTER_CHIME_SMA_ID");
        let from_number = r.get("MUSTER_CHIME_FROM_NUMBER");
        let chime = match (sma, from_number) {
            (Some(sma), Some(from)) => {
                if muster::domain::PhoneNumber::parse(&from).is_err() {
                    r.problem("MUSTER_CHIME_FROM_NUMBER", "is not an E.164 number");
                }
                Some((sma, from))
            }
            (Some(_), None) => {
                r.problem(
                    "MUSTER_CHIME_FROM_NUMBER",
                    "is missing (required with MUSTER_CHIME_SMA_ID)",
                );
                None
            }
            _ => None,
        };
        let push_enabled = match r.get("MUSTER_PUSH_ENABLED").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                r.problem("MUSTER_PUSH_ENABLED", "must be true or false");
                false
            }
        };
        let sns_topic_arns: Vec<String> = r
            .get("MUSTER_SNS_TOPIC_ARNS")
            .map(|v| muster::events::sns::topic_arns_from_csv(&v))
            .unwrap_or_default();
        if sns_topic_arns.iter().any(|a| !a.starts_with("arn:")) {
            r.problem("MUSTER_SNS_TOPIC_ARNS", "holds a value that is not an ARN");
        }
        // A bad entry leaves its source unserved (logged), not the whole
        // API down: the sources are optional, the API is not.
        let integration_secrets = match r.get("MUSTER_INTEGRATION_SECRETS") {
            Some(text) => {
                let (good, problems) = muster::api::integrations::secrets_from_json(&text);
                for p in problems {
                    tracing::error!(problem = %p, "MUSTER_INTEGRATION_SECRETS: an entry is ignored");
                }
                good
            }
            None => Vec::new(),
        };
        let cloudwatch_topic_arns: Vec<String> = r
            .get("MUSTER_CLOUDWATCH_TOPIC_ARNS")
            .map(|v| muster::events::sns::topic_arns_from_csv(&v))
            .unwrap_or_default();
        if cloudwatch_topic_arns.iter().any(|a| !a.starts_with("arn:")) {
            r.problem(
                "MUSTER_CLOUDWATCH_TOPIC_ARNS",
                "holds a value that is not an ARN",
            );
        }
        // Bad write-back settings turn write-back off (logged), never the
        // function: notes are secondary to the cascades.
        let write_back = r.get("MUSTER_WRITEBACK").and_then(|text| {
            match muster::adapters::notes::HttpNotes::from_json(&text) {
                // `{}` (the template's initial secret): no source configured.
                Ok(notes) if notes.sources().is_empty() => None,
                Ok(_) => Some(Secret::new(text)),
                Err(e) => {
                    tracing::error!(problem = %e, "write-back is off");
                    None
                }
            }
        });
        // Bad SIEM settings turn the export off (logged), never the function.
        let siem =
            r.get("MUSTER_SIEM")
                .and_then(|text| match muster::adapters::siem::from_json(&text) {
                    Ok(sinks) if sinks.is_empty() => None,
                    Ok(_) => Some(Secret::new(text)),
                    Err(e) => {
                        tracing::error!(problem = %e, "SIEM export is off");
                        None
                    }
                });
        // Bad gateway settings leave every channel to the AWS carriers
        // (logged), never stop the function.
        let gateways = r.get("MUSTER_GATEWAYS").and_then(|text| {
            match muster::adapters::gateways::from_json(&text) {
                Ok(g) if g.chosen().is_empty() && g.hooks.served().is_empty() => None,
                Ok(_) => Some(Secret::new(text)),
                Err(e) => {
                    tracing::error!(problem = %e, "the gateways are off");
                    None
                }
            }
        });
        let contact_lookup_url = r.url("MUSTER_CONTACT_LOOKUP_URL");
        let contact_lookup_token = r.get("MUSTER_CONTACT_LOOKUP_TOKEN").map(Secret::new);
        let audit_archive_bucket = r.get("MUSTER_AUDIT_ARCHIVE_BUCKET");
        let audit_retention_days = match r.get("MUSTER_AUDIT_RETENTION_DAYS") {
            None => DEFAULT_RETENTION_DAYS,
            Some(v) => match v.parse::<u32>() {
                Ok(d) if (1..=3650).contains(&d) => d,
                _ => {
                    r.problem(
                        "MUSTER_AUDIT_RETENTION_DAYS",
                        "must be a whole number of days from 1 to 3650",
                    );
                    DEFAULT_RETENTION_DAYS
                }
            },
        };
        // A policy of any size from a file (a Lambda layer's, under /opt):
        // Lambda's environment holds 4 KB in all.
        let policy_file = r.get("MUSTER_POLICY_FILE");
        if policy_file.is_some() && r.get("MUSTER_POLICY").is_some() {
            r.problem(
                "MUSTER_POLICY_FILE",
                "is set together with MUSTER_POLICY: give the policy one way",
            );
        }
        let file_policy =
            policy_file
                .as_ref()
                .and_then(|path| match std::fs::read_to_string(path) {
                    Err(e) => {
                        r.problem("MUSTER_POLICY_FILE", format!("cannot read {path}: {e}"));
                        None
                    }
                    Ok(text) => match Policy::from_toml(&text) {
                        Ok(p) => Some(p),
                        Err(errors) => {
                            let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                            r.problem(
                                "MUSTER_POLICY_FILE",
                                format!("{path} is not a valid policy: {}", list.join(", ")),
                            );
                            None
                        }
                    },
                });
        let policy = match r.get("MUSTER_POLICY") {
            None => file_policy.unwrap_or_default(),
            Some(text) => match Policy::from_toml(&text) {
                Ok(p) => p,
                Err(errors) => {
                    let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                    r.problem(
                        "MUSTER_POLICY",
                        format!("is not a valid policy: {}", list.join(", ")),
                    );
                    Policy::default()
                }
            },
        };
        let board = match (
            r.get("MUSTER_BOARD_SIGN_IN_URL"),
            r.get("MUSTER_BOARD_CLIENT_ID"),
            r.get("MUSTER_BOARD_URL"),
        ) {
            (None, None, None) => None,
            (Some(domain), Some(client_id), Some(redirect_uri)) => {
                let origin_only = domain.strip_prefix("https://").is_some_and(|host| {
                    let host = host.trim_end_matches('/');
                    !host.is_empty()
                        && host
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                });
                if !origin_only {
                    r.problem(
                        "MUSTER_BOARD_SIGN_IN_URL",
                        "must be the user pool domain's https origin, e.g. https://muster-prod.auth.eu-west-1.amazoncognito.com",
                    );
                }
                if !redirect_uri.starts_with("https://") {
                    r.problem(
                        "MUSTER_BOARD_URL",
                        "must be an https URL (the board's callback)",
                    );
                }
                if client_id.is_empty() || !client_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    r.problem("MUSTER_BOARD_CLIENT_ID", "is not an app client id");
                }
                Some(muster::api::board::CognitoSignIn {
                    domain: domain.trim_end_matches('/').to_string(),
                    client_id,
                    redirect_uri,
                    scopes: BOARD_SCOPES.iter().map(|s| s.to_string()).collect(),
                })
            }
            _ => {
                r.problem(
                    "MUSTER_BOARD_SIGN_IN_URL",
                    "MUSTER_BOARD_SIGN_IN_URL, MUSTER_BOARD_CLIENT_ID and MUSTER_BOARD_URL go together: set all three or none",
                );
                None
            }
        };
        if !r.problems.is_empty() {
            return Err(ConfigError {
                function: function.as_str(),
                problems: r.problems,
            });
        }
        Ok(Config {
            function,
            stage,
            state_table,
            audit_table,
            directory_table,
            dispatch_queue_url,
            priority_queue_url,
            timer_queue_url,
            timer_queue_arn,
            scheduler_group,
            scheduler_role_arn,
            pii_key_id,
            seal_key_id,
            api_base_url,
            ack_secret,
            webhook_secret,
            scim_token,
            ses_from,
            ses_configuration_set,
            sms_origination,
            sms_configuration_set,
            chime,
            push_enabled,
            sns_topic_arns,
            integration_secrets,
            cloudwatch_topic_arns,
            write_back,
            siem,
            gateways,
            contact_lookup_url,
            contact_lookup_token,
            audit_archive_bucket,
            audit_retention_days,
            policy,
            board,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    fn full() -> HashMap<&'static str, String> {
        let mut m = HashMap::new();
        for (name, _) in VARIABLES {
            m.insert(name, String::new());
        }
        let set = [
            ("MUSTER_STAGE", "dev"),
            ("MUSTER_STATE_TABLE", "state"),
            ("MUSTER_AUDIT_TABLE", "audit"),
            ("MUSTER_DIRECTORY_TABLE", "directory"),
            (
                "MUSTER_DISPATCH_QUEUE_URL",
                "https://sqs.eu-west-1.amazonaws.com/1/d",
            ),
            (
                "MUSTER_PRIORITY_QUEUE_URL",
                "https://sqs.eu-west-1.amazonaws.com/1/p",
            ),
            (
                "MUSTER_TIMER_QUEUE_URL",
                "https://sqs.eu-west-1.amazonaws.com/1/t",
            ),
            ("MUSTER_TIMER_QUEUE_ARN", "arn:aws:sqs:eu-west-1:1:t"),
            ("MUSTER_SCHEDULER_GROUP", "muster"),
            ("MUSTER_SCHEDULER_ROLE_ARN", "arn:aws:iam::1:role/s"),
            ("MUSTER_PII_KEY_ID", "alias/pii"),
            ("MUSTER_SEAL_KEY_ID", "alias/seal"),
            ("MUSTER_API_BASE_URL", "https://api.example.net"),
            ("MUSTER_ACK_SECRET", "0123456789abcdef0123"),
            ("MUSTER_WEBHOOK_SECRET", "fedcba98765432100123"),
            ("MUSTER_SES_FROM", "alerts@example.net"),
            ("MUSTER_SES_CONFIGURATION_SET", "muster"),
            (
                "MUSTER_SNS_TOPIC_ARNS",
                "arn:aws:sns:eu-west-1:1:a, arn:aws:sns:eu-west-1:1:b",
            ),
            ("MUSTER_AUDIT_ARCHIVE_BUCKET", "archive"),
        ];
        for (k, v) in set {
            m.insert(k, v.to_string());
        }
        m
    }

    fn load(f: Function, env: &HashMap<&'static str, String>) -> Result<Config, ConfigError> {
        Config::from_lookup(f, |n| env.get(n).cloned())
    }

    #[test]
    fn a_policy_of_any_size_comes_from_its_file_and_a_bad_one_is_named() {
        let dir = std::env::temp_dir().join(format!("muster-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let example = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/policies/p3-no-voice.toml"
        ))
        .unwrap();
        // Past the 4 KB Lambda's environment holds in all.
        let big = format!(
            "{}{example}",
            "# a long policy comment, line after line\n".repeat(120)
        );
        assert!(big.len() > 4096);
        let (ok, bad) = (dir.join("ok.toml"), dir.join("bad.toml"));
        std::fs::write(&ok, &big).unwrap();
        std::fs::write(&bad, "[channel_order]\nP3 = [\"fax\"]\n").unwrap();
        let mut env = full();
        env.insert("MUSTER_POLICY_FILE", ok.display().to_string());
        let got = load(Function::Tick, &env).unwrap().policy;
        assert_eq!(got, Policy::from_toml(&example).unwrap());
        assert_ne!(got, Policy::default());
        env.insert("MUSTER_POLICY_FILE", bad.display().to_string());
        let e = load(Function::Tick, &env)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("MUSTER_POLICY_FILE") && e.contains("fax"), "{e}");
        env.insert(
            "MUSTER_POLICY_FILE",
            dir.join("none.toml").display().to_string(),
        );
        let e = load(Function::Tick, &env)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("cannot read"), "{e}");
        env.insert("MUSTER_POLICY_FILE", ok.display().to_string());
        env.insert("MUSTER_POLICY", "[channel_order]\n".into());
        let e = load(Function::Tick, &env)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("one way"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_full_environment_loads_for_every_function() {
        let env = full();
        for f in [
            Function::Trigger,
            Function::Dispatch,
            Function::Receipt,
            Function::Tick,
        ] {
            let c = load(f, &env).unwrap();
            assert_eq!(c.audit_retention_days, 180);
            assert_eq!(c.sns_topic_arns.len(), 2);
            assert!(c.chime.is_none() && !c.push_enabled);
        }
    }

    #[test]
    fn the_boards_sign_in_is_all_three_variables_or_none() {
        let mut env = full();
        assert_eq!(load(Function::Trigger, &env).unwrap().board, None);
        env.insert(
            "MUSTER_BOARD_SIGN_IN_URL",
            "https://muster-prod-1.auth.eu-west-1.amazoncognito.com/".into(),
        );
        let e = load(Function::Trigger, &env).unwrap_err().to_string();
        assert!(e.contains("set all three or none"), "{e}");
        env.insert("MUSTER_BOARD_CLIENT_ID", "4lh2boardclient9".into());
        env.insert(
            "MUSTER_BOARD_URL",
            "https://abc.execute-api.eu-west-1.amazonaws.com/board".into(),
        );
        let board = load(Function::Trigger, &env).unwrap().board.unwrap();
        assert_eq!(
            board.domain,
            "https://muster-prod-1.auth.eu-west-1.amazoncognito.com"
        );
        assert_eq!(board.scopes, BOARD_SCOPES);
        for (name, bad) in [
            ("MUSTER_BOARD_SIGN_IN_URL", "http://muster.auth.example.com"),
            (
                "MUSTER_BOARD_SIGN_IN_URL",
                "https://muster.auth.example.com/oauth2",
            ),
            ("MUSTER_BOARD_URL", "http://abc.example.com/board"),
            ("MUSTER_BOARD_CLIENT_ID", "client id"),
        ] {
            let mut env = env.clone();
            env.insert(name, bad.into());
            let e = load(Function::Trigger, &env).unwrap_err();
            let names: Vec<&str> = e.problems.iter().map(|p| p.name).collect();
            assert_eq!(names, [name], "{bad}");
        }
    }

    #[test]
    fn every_missing_variable_is_named_in_one_error() {
        let e = Config::from_lookup(Function::Dispatch, |_| None).unwrap_err();
        let names: Vec<&str> = e.problems.iter().map(|p| p.name).collect();
        let expected: Vec<&str> = VARIABLES
            .iter()
            .filter(|(_, fs)| fs.contains(&Function::Dispatch))
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(names, expected);
        let text = e.to_string();
        assert!(text.starts_with("muster-dispatch cannot start: 15 environment"));
        assert!(text.contains("MUSTER_SES_FROM is missing"));
        // Receipt's own variables are not required of dispatch.
        assert!(!text.contains("MUSTER_WEBHOOK_SECRET"));
    }

    #[test]
    fn invalid_values_are_reported_together_without_their_values() {
        let mut env = full();
        env.insert("MUSTER_DISPATCH_QUEUE_URL", "sqs-queue".into());
        env.insert("MUSTER_ACK_SECRET", "short-secret".into());
        env.insert("MUSTER_AUDIT_RETENTION_DAYS", "forever".into());
        env.insert("MUSTER_CHIME_SMA_ID", "sma-1".into());
        env.insert("MUSTER_PUSH_ENABLED", "yes".into());
        env.insert("MUSTER_POLICY", "[defaults]\nnonsense = 1".into());
        let e = load(Function::Trigger, &env).unwrap_err();
        let names: Vec<&str> = e.problems.iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                "MUSTER_DISPATCH_QUEUE_URL",
                "MUSTER_ACK_SECRET",
                "MUSTER_CHIME_FROM_NUMBER",
                "MUSTER_PUSH_ENABLED",
                "MUSTER_AUDIT_RETENTION_DAYS",
                "MUSTER_POLICY",
            ]
        );
        assert!(!e.to_string().contains("short-secret"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = load(Function::Receipt, &full()).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("0123456789abcdef0123"));
    }
}
