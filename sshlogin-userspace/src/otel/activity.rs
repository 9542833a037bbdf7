//! Session activity as log records: `ssh.session.exec`,
//! `ssh.session.escalation` and `ssh.session.activity.summary`.

use super::Value;
use crate::event::{Escalation, Event, SessionExec};

pub mod attr {
    pub const COMMAND_ARGS: &str = "process.command_args";
    pub const ARGS_TRUNCATED: &str = "ssh.exec.args_truncated";
    /// Effective and real uid (semantic conventions: integers).
    pub const PROCESS_USER_ID: &str = "process.user.id";
    pub const PROCESS_REAL_USER_ID: &str = "process.real_user.id";
    pub const SUBSYSTEM: &str = "ssh.subsystem";
    pub const ESCALATION_RESULT: &str = "ssh.escalation.result";
    pub const ESCALATION_METHOD: &str = "ssh.escalation.method";
    pub const ESCALATION_PROGRAM: &str = "ssh.escalation.program";
    pub const ESCALATION_USER_NAME: &str = "ssh.escalation.user.name";
    pub const ESCALATION_USER_ID: &str = "ssh.escalation.user.id";
    pub const ESCALATION_COMMAND: &str = "ssh.escalation.command";
    pub const ACTIVITY_REPORTED: &str = "ssh.activity.reported";
    pub const ACTIVITY_SUPPRESSED: &str = "ssh.activity.suppressed";
}

pub(super) fn exec_attributes(set: &mut impl FnMut(&'static str, Value), x: &SessionExec) {
    set(attr::COMMAND_ARGS, Value::List(x.args.clone()));
    if x.args_cut {
        set(attr::ARGS_TRUNCATED, Value::Bool(true));
    }
    if let Some(euid) = x.euid {
        set(attr::PROCESS_USER_ID, euid.into());
    }
    set(attr::PROCESS_REAL_USER_ID, x.real_uid.into());
    if let Some(s) = x.subsystem {
        set(attr::SUBSYSTEM, s.into());
    }
}

pub(super) fn escalation_attributes(set: &mut impl FnMut(&'static str, Value), x: &Escalation) {
    set(attr::ESCALATION_RESULT, if x.success { "success" } else { "failure" }.into());
    set(attr::ESCALATION_METHOD, x.method.as_str().into());
    let fields = [
        (attr::ESCALATION_PROGRAM, x.program.as_deref().map(Value::from)),
        (attr::ESCALATION_USER_NAME, x.target_user.as_deref().map(Value::from)),
        (attr::ESCALATION_USER_ID, x.target_uid.map(Value::from)),
        (attr::ESCALATION_COMMAND, x.command.as_deref().map(Value::from)),
    ];
    for (key, value) in fields {
        if let Some(v) = value {
            set(key, v);
        }
    }
}

pub(super) fn summary_attributes(set: &mut impl FnMut(&'static str, Value), reported: u64, suppressed: u64) {
    set(attr::ACTIVITY_REPORTED, reported.into());
    set(attr::ACTIVITY_SUPPRESSED, suppressed.into());
}

pub(super) fn describe_exec(e: &Event, user: &str) -> String {
    let program = e.process.exe.as_deref().unwrap_or("a program");
    match &e.kind {
        crate::event::Kind::SessionExec(x) if x.subsystem.is_some() => {
            format!("{user} started {} ({program})", x.subsystem.unwrap_or_default())
        }
        _ => format!("{user} ran {program}"),
    }
}

pub(super) fn describe_escalation(x: &Escalation, user: &str) -> String {
    let target = match (&x.target_user, x.target_uid) {
        (Some(name), _) => name.clone(),
        (None, Some(uid)) => format!("uid {uid}"),
        (None, None) => "another user".into(),
    };
    let how = match x.program.as_deref() {
        Some(p) => format!("{} ({p})", x.method),
        None => x.method.clone(),
    };
    if x.success {
        format!("{user} became {target} through {how}")
    } else {
        format!("{user} failed to become {target} through {how}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::{Kind, Process},
        otel::{EventName, log_record},
    };

    #[test]
    fn an_exec_record() {
        let mut e = Event::new(
            Kind::SessionExec(Box::new(SessionExec {
                args: vec!["ls".into(), "/".into()],
                args_cut: true,
                euid: Some(1001),
                real_uid: 1001,
                subsystem: None,
            })),
            1,
        );
        e.user = Some("alice".into());
        e.process = Process { pid: 7, parent_pid: Some(6), exe: Some("/usr/bin/ls".into()) };
        let r = log_record(&e);
        assert_eq!(r.name, EventName::SessionExec);
        assert_eq!(r.attributes.get(attr::COMMAND_ARGS), Some(&Value::List(vec!["ls".into(), "/".into()])));
        assert_eq!(r.int(attr::PROCESS_USER_ID), Some(1001));
        assert_eq!(r.attributes.get(attr::ARGS_TRUNCATED), Some(&Value::Bool(true)));
        assert_eq!(r.body, "alice ran /usr/bin/ls");
    }

    #[test]
    fn escalation_records() {
        let x = Escalation {
            success: false,
            method: "su".into(),
            program: Some("/usr/bin/su".into()),
            target_user: Some("root".into()),
            ..Escalation::default()
        };
        let mut e = Event::new(Kind::Escalation(Box::new(x)), 1);
        e.user = Some("alice".into());
        let r = log_record(&e);
        assert_eq!(r.name, EventName::Escalation);
        assert_eq!(r.str(attr::ESCALATION_RESULT), Some("failure"));
        assert_eq!(r.str(attr::ESCALATION_USER_NAME), Some("root"));
        assert_eq!(r.body, "alice failed to become root through su (/usr/bin/su)");
    }
}
