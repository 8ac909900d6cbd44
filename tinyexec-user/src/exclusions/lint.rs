//! Warnings about exclusions an attacker can satisfy on purpose.
//!
//! An exclusion hides an alert, so any predicate whose value the person running
//! a binary can choose is a way to hide their own alert: name a file `snort`,
//! add an argument, set the process's comm. Only predicates used positively
//! (under an even number of NOTs) are reported: a predicate only under NOT can
//! only narrow an exclusion, so even when an attacker dodges it they are no
//! better off than without it.

use super::{
    expr::{Exclusion, Expr},
    matching::{Op, Predicate},
};

/// A field an attacker can use to satisfy an exclusion on purpose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub field: String,
    /// Why, and a sturdier field to use instead.
    pub message: String,
}

/// Warnings for `exclusion` (see [`super::lint`]), at most one per field and
/// kind of problem, in order of first use.
pub(super) fn warnings(exclusion: &Exclusion) -> Vec<Warning> {
    let mut positive = Vec::new();
    collect_positive(&exclusion.expr, true, &mut positive);
    let mut seen: Vec<(&str, Problem)> = Vec::new();
    let mut out = Vec::new();
    for p in positive {
        for problem in problems(p) {
            if seen.contains(&(p.field.as_str(), problem)) {
                continue;
            }
            seen.push((p.field.as_str(), problem));
            out.push(Warning {
                field: p.field.clone(),
                message: message(p, problem),
            });
        }
    }
    out
}

fn collect_positive<'a>(e: &'a Expr, positive: bool, out: &mut Vec<&'a Predicate>) {
    match e {
        Expr::Pred(p) if positive => out.push(p),
        Expr::Pred(_) => {}
        Expr::Not(inner) => collect_positive(inner, !positive, out),
        Expr::And(items) | Expr::Or(items) => {
            for i in items {
                collect_positive(i, positive, out);
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Problem {
    /// The runner picks the file's name.
    Name,
    /// The runner picks the arguments.
    Arguments,
    /// A process picks its own comm, which its children see as their parent's.
    ParentName,
    /// A term or substring match on a path is not anchored: a user can create
    /// a directory tree that contains the terms.
    UnanchoredPath,
    /// Read from the cgroup path, which whoever may create cgroups names.
    CgroupNamed,
    /// A number the kernel allocates on this host: it means nothing on
    /// another, and is reused once its namespace is gone.
    HostLocal,
    /// Chosen by whoever may create namespaces (any user, where unprivileged
    /// user namespaces are allowed).
    OwnNamespace,
    /// A container's or pod's name: whoever creates the container chooses it.
    WorkloadNamed,
    /// An image's name or tag: whoever pulls or tags images chooses it, and a
    /// registry serves what it likes under a name.
    ImageNamed,
    /// A Kubernetes namespace: whoever may create pods there (or containers
    /// with its annotations, where no Kubernetes checks them) runs anything in it.
    KubernetesNamespace,
}

fn problems(p: &Predicate) -> Vec<Problem> {
    let mut out = Vec::new();
    match p.field.as_str() {
        "process.name" | "file.name" => out.push(Problem::Name),
        "process.command_line" | "process.args" => out.push(Problem::Arguments),
        "process.parent.name" | "process.parent_process_name" => out.push(Problem::ParentName),
        "file.path" | "file.directory" | "process.executable" | "process.parent.executable"
            if p.op != Op::Equals =>
        {
            out.push(Problem::UnanchoredPath);
        }
        "container.id" | "container.runtime" | "kubernetes.pod.uid" | "orchestrator.type" => {
            out.push(Problem::CgroupNamed);
        }
        "process.cgroup.path" if p.op != Op::Equals => out.push(Problem::CgroupNamed),
        "process.cgroup.id"
        | "process.namespaces.mnt"
        | "process.namespaces.pid"
        | "process.namespaces.net"
        | "process.namespaces.user"
        | "process.namespaces.uts"
        | "process.namespaces.cgroup" => out.push(Problem::HostLocal),
        "process.namespaces.host" | "process.vpid" | "process.parent.vpid" => {
            out.push(Problem::OwnNamespace);
        }
        "container.name" | "kubernetes.pod.name" | "kubernetes.container.name" => {
            out.push(Problem::WorkloadNamed);
        }
        "container.image.name" | "container.image.tag" => out.push(Problem::ImageNamed),
        "kubernetes.namespace" => out.push(Problem::KubernetesNamespace),
        _ => {}
    }
    out
}

fn message(p: &Predicate, problem: Problem) -> String {
    let field = &p.field;
    let value = p.value.trim_matches('*');
    match problem {
        Problem::Name => format!(
            "`{field}` is the executed file's base name, which whoever runs a binary chooses: \
             copy or rename any file to `{value}` and this exclusion hides its alert. \
             Match the file itself instead: `file.path==\"/full/path\"` or `file.hash.sha256==\"...\"`"
        ),
        Problem::Arguments => format!(
            "`{field}` is made of the arguments, and whoever starts a process chooses every one \
             (`anything {value}` matches too). Match what launched it instead: \
             `process.parent.executable==\"/full/path\"`, with `file.path`"
        ),
        Problem::ParentName => format!(
            "`{field}` is the parent's comm, which any process sets for itself (prctl(PR_SET_NAME), \
             or by running a copy named `{value}`) before it starts the child. \
             Match the parent's file instead: `process.parent.executable==\"/full/path\"`"
        ),
        Problem::UnanchoredPath => {
            let mut example = format!("/tmp/{}", value.trim_start_matches('/'));
            if example.ends_with('/') {
                example.push('x');
            }
            format!(
                "`{field}:` matches terms anywhere in the path, not from its start: any user can \
                 create `{example}` to satisfy it. Compare the whole path with `{field}==\"...\"` \
                 (or the directory with `file.directory==\"...\"`)"
            )
        }
        Problem::CgroupNamed => format!(
            "`{field}` is read from the process's cgroup path, and a process allowed to create \
             cgroups chooses that name: root anywhere, a user in the subtree systemd delegates to \
             it (user@UID.service on cgroup v2), a privileged container in its own. Creating \
             `.../docker-<any id>.scope` and moving into it is enough. Compare the whole path \
             from the hierarchy's root, which only who may write its parent can create: \
             `process.cgroup.path==\"/system.slice/docker-<id>.scope\"`"
        ),
        Problem::HostLocal => format!(
            "`{field}` is a number the kernel gives out on this host: the same value names \
             something else on another host, after a reboot, and (namespaces) once this one is \
             gone and its number reused. No workload chooses it, but an exclusion on it may come \
             to cover an unrelated process. Name the container instead: \
             `process.cgroup.path==\"...\"` with `file.path==\"...\"`"
        ),
        Problem::OwnNamespace => format!(
            "`{field}` is decided by whoever creates namespaces, and where unprivileged user \
             namespaces are allowed that is any user (`unshare -Urpf --mount-proc` gives pid 1 \
             and namespaces other than the host's). Match what the runtime alone decides: \
             `process.cgroup.path==\"...\"`, with `file.path==\"...\"`"
        ),
        Problem::WorkloadNamed => format!(
            "`{field}` is the name whoever creates the container or pod gives it (`podman run \
             --name {value}`, a pod's spec, `ctr run --annotation`): anyone allowed to start \
             containers on this host can call one `{value}`. Match what the image is instead: \
             `container.image.hash.all==\"sha256:...\"`, with `file.path==\"...\"`"
        ),
        Problem::ImageNamed => format!(
            "`{field}` is the image's name as it was asked for: whoever may pull or tag images \
             can give any image the name `{value}`, and an untrusted registry serves what it \
             likes under it. Match the image's digest, which only its content gives: \
             `container.image.hash.all==\"sha256:...\"`"
        ),
        Problem::KubernetesNamespace => format!(
            "`{field}` covers whatever anyone allowed to create pods in `{value}` runs there \
             (and any container whose creator writes the CRI's annotations by hand, where no \
             Kubernetes checks them). Narrow it to what the exclusion is for: \
             `container.image.hash.all==\"sha256:...\"`, with `file.path==\"...\"`"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Warning, lint, parse};

    fn warnings(line: &str) -> Vec<Warning> {
        let parsed = parse("t", line);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        lint(&parsed.exclusions[0])
    }

    fn fields(line: &str) -> Vec<String> {
        warnings(line).into_iter().map(|w| w.field).collect()
    }

    #[test]
    fn each_attacker_chosen_field_warns_with_a_sturdier_one() {
        let cases = [
            ("process.name:snort", "file.hash.sha256"),
            ("file.name:snort", "file.path"),
            (
                "process.command_line:update-firewall-rules.sh",
                "process.parent.executable",
            ),
            ("process.args:--apply", "process.parent.executable"),
            ("process.parent.name:cron", "process.parent.executable"),
            (
                "process.parent_process_name:cron",
                "process.parent.executable",
            ),
        ];
        for (line, instead) in cases {
            let w = warnings(line);
            assert_eq!(w.len(), 1, "{line}: {w:?}");
            let field = line.split(':').next().unwrap_or_default();
            assert_eq!(w[0].field, field);
            assert!(
                w[0].message.contains(&format!("`{field}`")),
                "{}",
                w[0].message
            );
            assert!(w[0].message.contains(instead), "{line}: {}", w[0].message);
        }
        assert!(
            warnings("process.name:snort")[0]
                .message
                .contains("rename any file to `snort`")
        );
    }

    #[test]
    fn container_fields_warn_with_who_chooses_them() {
        for (line, says) in [
            ("container.id:abc", "create cgroups"),
            ("kubernetes.pod.uid:abc", "create cgroups"),
            ("container.runtime==docker", "create cgroups"),
            ("orchestrator.type==kubernetes", "create cgroups"),
            ("process.cgroup.path:docker", "create cgroups"),
            ("process.namespaces.net:4026532001", "on another host"),
            ("process.cgroup.id:1234", "on another host"),
            ("process.namespaces.host==false", "any user"),
            ("process.vpid:1", "any user"),
            ("process.parent.vpid:0", "any user"),
        ] {
            let w = warnings(line);
            assert_eq!(w.len(), 1, "{line}: {w:?}");
            assert!(w[0].message.contains(says), "{line}: {}", w[0].message);
            assert!(w[0].message.contains("process.cgroup.path=="), "{line}");
        }
        // The whole path from the root is what the lint recommends.
        assert_eq!(
            warnings(r#"process.cgroup.path=="/system.slice/docker-a.scope""#),
            []
        );
    }

    #[test]
    fn workload_names_warn_with_who_chooses_them() {
        for (line, says) in [
            ("container.name:tx-web", "creates the container"),
            ("kubernetes.pod.name:payments", "creates the container"),
            ("kubernetes.container.name==web", "creates the container"),
            (
                "container.image.name==\"registry.example/payments\"",
                "untrusted registry",
            ),
            ("container.image.tag==1.2", "untrusted registry"),
            ("kubernetes.namespace==prod", "create pods in `prod`"),
        ] {
            let w = warnings(line);
            assert_eq!(w.len(), 1, "{line}: {w:?}");
            assert!(w[0].message.contains(says), "{line}: {}", w[0].message);
            assert!(
                w[0].message.contains("container.image.hash.all=="),
                "{line}"
            );
        }
        assert_eq!(warnings(r#"container.image.hash.all=="sha256:ab""#), []);
    }

    #[test]
    fn sturdy_fields_do_not_warn() {
        for line in [
            "file.path==/usr/sbin/snort",
            "process.parent.executable==/usr/sbin/cron",
            "file.hash.sha256==abc",
            "process.user:root AND process.uid:0",
            "file.directory==/etc/cron.d",
        ] {
            assert_eq!(warnings(line), [], "{line}");
        }
    }

    #[test]
    fn unanchored_paths_warn() {
        let w = warnings(r#"file.path:"/etc/cron.d/""#);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].message.contains("`/tmp/etc/cron.d/x`"),
            "{}",
            w[0].message
        );
        assert_eq!(
            fields("process.parent.executable:*cron"),
            ["process.parent.executable"]
        );
        assert_eq!(fields("file.directory:*cron.d*"), ["file.directory"]);
    }

    #[test]
    fn only_positive_uses_warn_once_per_field() {
        assert_eq!(
            fields("process.user:root AND NOT process.name:snort"),
            Vec::<String>::new()
        );
        assert_eq!(fields("NOT NOT process.name:snort"), ["process.name"]);
        assert_eq!(
            fields("process.name:a OR process.name:b OR NOT (file.name:c OR NOT process.args:d)"),
            ["process.name", "process.args"]
        );
    }
}
