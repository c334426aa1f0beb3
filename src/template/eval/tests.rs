//! Unit tests of the expression language: each function and operator,
//! its errors (at the right place) and how sensitivity flows through it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::Scope;
use crate::template::diagnostic::SourceFile;
use crate::template::expr;
use crate::template::node::Node;
use crate::template::value::Value;

/// Evaluates `text` (a string with `${…}`) with `var.*` from `vars` and
/// `secret.token` = "s3cr3t"; files resolve against `dir`. Returns the
/// value or the errors, each as `line:col: message`.
fn eval_in(dir: &Path, vars: &[(&str, Value)], text: &str) -> Result<Value, Vec<String>> {
    let file = Arc::new(SourceFile {
        path: dir.join("t.toml"),
        name: "t.toml".into(),
        text: text.to_string(),
    });
    let vars: BTreeMap<String, Value> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let secrets = BTreeMap::from([("token".to_string(), Value::Str("s3cr3t".into()).sensitive())]);
    let nodes: BTreeMap<String, Node> = BTreeMap::new();
    let scope = Scope::new(&file, dir, &vars, &secrets, &nodes, &nodes, "b-1");
    let parsed = expr::parse(text, 0..text.len(), &|i| i).map_err(|e| vec![e.message])?;
    let v = scope.eval_str(&parsed);
    let diags = scope.take_diagnostics();
    if !diags.is_empty() {
        return Err(diags
            .iter()
            .map(|d| {
                let (f, l, c) = d.location().unwrap_or_default();
                format!("{f}:{l}:{c}: {}", d.message)
            })
            .collect());
    }
    Ok(v.expect("no errors means a value"))
}

fn eval(text: &str) -> Result<Value, Vec<String>> {
    eval_in(Path::new("/nonexistent"), &vars(), text)
}

fn vars() -> Vec<(&'static str, Value)> {
    vec![
        (
            "list",
            Value::List(vec![Value::Str("a".into()), Value::Str("b".into())]),
        ),
        (
            "tags",
            Value::Map(BTreeMap::from([
                ("env".to_string(), Value::Str("prod".into())),
                ("team".to_string(), Value::Str("web".into())),
            ])),
        ),
        ("n", Value::Num(3.0)),
        ("on", Value::Bool(true)),
        ("empty", Value::Str(String::new())),
    ]
}

fn s(v: &str) -> Value {
    Value::Str(v.into())
}

fn err(text: &str) -> String {
    eval(text).unwrap_err().join("\n")
}

#[test]
fn conditionals_take_one_branch() {
    assert_eq!(eval("${var.on ? \"yes\" : \"no\"}").unwrap(), s("yes"));
    assert_eq!(
        eval("${var.n > 5 ? \"big\" : var.n == 3 ? \"three\" : \"small\"}").unwrap(),
        s("three")
    );
    assert_eq!(
        eval("${var.empty == \"\" ? \"unset\" : var.empty}").unwrap(),
        s("unset")
    );
    // The branch not taken may fail: it is not evaluated.
    assert_eq!(
        eval("${var.on ? 1 : var.list[9]}").unwrap(),
        Value::Num(1.0)
    );
    assert_eq!(
        eval("${!var.on || var.list[9] == \"x\" ? 1 : 2}").unwrap_err()[0],
        "t.toml:1:14: index 9 is out of range for a list of 2 item(s)"
    );
    assert_eq!(
        eval("${var.n >= 3 && var.n < 4}").unwrap(),
        Value::Bool(true)
    );
    assert_eq!(eval("${var.n != 3}").unwrap(), Value::Bool(false));
    // Errors name the place and what was wrong.
    assert!(err("${var.n ? 1 : 2}")
        .contains("t.toml:1:3: the condition of `? :` must be a bool, found a number"));
    assert!(err("${\"a\" < 2}").contains("`<` compares numbers"));
    assert!(expr::parse("${var.on ? 1}", 0..13, &|i| i)
        .unwrap_err()
        .message
        .contains("expected `:`"));
}

#[test]
fn indexing_lists_and_maps() {
    assert_eq!(eval("${var.list[1]}").unwrap(), s("b"));
    assert_eq!(eval("${var.tags[\"env\"]}").unwrap(), s("prod"));
    assert_eq!(eval("${var.tags.team}").unwrap(), s("web"));
    assert_eq!(eval("${[\"x\", \"y\"][0]}").unwrap(), s("x"));
    assert_eq!(
        eval("${{ a = 1, \"b c\" = 2 }[\"b c\"]}").unwrap(),
        Value::Num(2.0)
    );
    assert_eq!(
        eval("${merge(var.tags, { env = \"dev\" }).env}").unwrap(),
        s("dev")
    );
    assert_eq!(
        err("${var.tags.tema}"),
        "t.toml:1:3: the map has no key `tema`"
    );
    assert!(
        err("${var.list[2]}").contains("indexes are 0 to 1")
            || err("${var.list[2]}").contains("out of range")
    );
    assert!(err("${var.list[\"a\"]}").contains("a list is indexed by a number"));
    assert!(err("${var.n[0]}").contains("cannot index a number"));
}

#[test]
fn try_and_can_hold_errors_back() {
    assert_eq!(
        eval("${try(var.tags.owner, \"nobody\")}").unwrap(),
        s("nobody")
    );
    assert_eq!(eval("${try(var.tags.env, \"nobody\")}").unwrap(), s("prod"));
    assert_eq!(eval("${can(var.list[5])}").unwrap(), Value::Bool(false));
    assert_eq!(eval("${can(var.list[1])}").unwrap(), Value::Bool(true));
    // All fail: the last one's error, nothing of the others.
    let e = eval("${try(var.tags.owner, var.list[7])}").unwrap_err();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("index 7 is out of range"), "{e:?}");
    assert!(err("${try()}").contains("`try` takes at least 1 argument(s)"));
}

#[test]
fn length_merge_lookup_contains_keys_values() {
    assert_eq!(eval("${length(var.list)}").unwrap(), Value::Num(2.0));
    assert_eq!(eval("${length(var.tags)}").unwrap(), Value::Num(2.0));
    assert_eq!(eval("${length(\"héllo\")}").unwrap(), Value::Num(5.0));
    let merged = eval("${merge(var.tags, { env = \"dev\", os = \"debian\" })}").unwrap();
    assert_eq!(
        merged,
        Value::Map(BTreeMap::from([
            ("env".to_string(), s("dev")),
            ("os".to_string(), s("debian")),
            ("team".to_string(), s("web")),
        ]))
    );
    assert!(err("${merge(var.tags, var.list)}")
        .contains("argument 2 of `merge` must be a map, found a list"));
    assert_eq!(eval("${lookup(var.tags, \"team\")}").unwrap(), s("web"));
    assert_eq!(
        eval("${lookup(var.tags, \"owner\", \"ops\")}").unwrap(),
        s("ops")
    );
    let e = err("${lookup(var.tags, \"tem\")}");
    assert!(
        e.contains("no key `tem`") && e.starts_with("t.toml:1:3:"),
        "{e}"
    );
    assert_eq!(
        eval("${contains(var.list, \"b\")}").unwrap(),
        Value::Bool(true)
    );
    assert_eq!(
        eval("${contains(var.list, \"z\")}").unwrap(),
        Value::Bool(false)
    );
    assert!(err("${contains(var.tags, \"b\")}").contains("must be a list"));
    assert_eq!(
        eval("${join(\",\", keys(var.tags))}-${join(\",\", values(var.tags))}").unwrap(),
        s("env,team-prod,web")
    );
}

#[test]
fn sensitivity_flows_through_every_function_and_operator() {
    let secret = |text: &str| {
        let v = eval(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        assert!(v.is_sensitive(), "{text} lost its sensitivity: {v:?}");
        v
    };
    // Picking a secret out of a structure keeps it sensitive…
    secret("${merge(var.tags, { token = secret.token }).token}");
    secret("${lookup(merge(var.tags, { token = secret.token }), \"token\")}");
    secret("${lookup(var.tags, \"nope\", secret.token)}");
    secret("${[secret.token, \"x\"][0]}");
    secret("${var.on ? secret.token : \"none\"}");
    secret("${try(var.tags.nope, secret.token)}");
    // …and so is anything computed from one.
    secret("${secret.token == \"s3cr3t\"}");
    secret("${secret.token == \"x\" ? \"a\" : \"b\"}");
    secret("${length(secret.token)}");
    secret("${contains([secret.token], \"s3cr3t\")}");
    secret("${upper(secret.token)}");
    secret("${formatdate(\"YYYY\", \"2024-01-01T00:00:00Z\")}-${secret.token}");
    // A merged map is not wholly sensitive: only the secret inside is.
    let m = secret("${merge(var.tags, { token = secret.token })}");
    let Value::Map(m) = m else { panic!() };
    assert!(!m["env"].is_sensitive() && m["token"].is_sensitive());
    // A plain value picked out of a map holding a secret is plain.
    assert!(!eval("${merge(var.tags, { token = secret.token }).env}")
        .unwrap()
        .is_sensitive());
}

#[test]
fn templatefile_renders_with_only_its_variables() {
    let dir = std::env::temp_dir().join(format!("kiln-tpl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("motd.tpl"),
        "Welcome to ${name}\n${length(pkgs)} packages: ${join(\" \", pkgs)}\n${debug ? \"debug on\" : \"\"}\nliteral $${HOME}\n",
    )
    .unwrap();
    let v = eval_in(
        &dir,
        &vars(),
        "${templatefile(\"motd.tpl\", { name = \"web\", pkgs = var.list, debug = var.on })}",
    )
    .unwrap();
    assert_eq!(
        v,
        s("Welcome to web\n2 packages: a b\ndebug on\nliteral ${HOME}\n")
    );
    // A secret rendered into it makes the result sensitive; one passed
    // but not used does not.
    std::fs::write(dir.join("cred.tpl"), "user=admin\npassword=${password}\n").unwrap();
    let v = eval_in(
        &dir,
        &vars(),
        "${templatefile(\"cred.tpl\", { password = secret.token })}",
    )
    .unwrap();
    assert!(v.is_sensitive(), "{v:?}");
    let v = eval_in(
        &dir,
        &vars(),
        "${templatefile(\"motd.tpl\", { name = \"x\", pkgs = [], debug = false, unused = secret.token })}",
    )
    .unwrap();
    assert!(!v.is_sensitive(), "{v:?}");
    // Errors point into the template file, at line:col.
    std::fs::write(dir.join("bad.tpl"), "line one\nhost ${hostname}\n").unwrap();
    let e = eval_in(
        &dir,
        &vars(),
        "${templatefile(\"bad.tpl\", { name = \"x\" })}",
    )
    .unwrap_err();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].ends_with("bad.tpl:2:8: unknown template variable `hostname`"),
        "{e:?}"
    );
    std::fs::write(dir.join("var.tpl"), "${var.n}").unwrap();
    let e = eval_in(&dir, &vars(), "${templatefile(\"var.tpl\", {})}").unwrap_err();
    assert!(e[0].contains("unknown template variable `var`"), "{e:?}");
    std::fs::write(dir.join("syntax.tpl"), "a\nb ${oops(}\n").unwrap();
    let e = eval_in(&dir, &vars(), "${templatefile(\"syntax.tpl\", {})}").unwrap_err();
    assert!(e[0].contains("syntax.tpl:2:"), "{e:?}");
    std::fs::write(dir.join("for.tpl"), "%{ for p in pkgs }${p}%{ endfor }").unwrap();
    let e = eval_in(&dir, &vars(), "${templatefile(\"for.tpl\", { pkgs = [] })}").unwrap_err();
    assert!(
        e[0].contains("for.tpl:1:1: template directives") && e[0].contains("not supported yet"),
        "{e:?}"
    );
    std::fs::write(dir.join("self.tpl"), "${templatefile(\"self.tpl\", {})}").unwrap();
    let e = eval_in(&dir, &vars(), "${templatefile(\"self.tpl\", {})}").unwrap_err();
    assert!(e.iter().any(|e| e.contains("nest deeper than 8")), "{e:?}");
    let e = eval_in(&dir, &vars(), "${templatefile(\"missing.tpl\", {})}").unwrap_err();
    assert!(
        e[0].starts_with("t.toml:1:3: templatefile(): cannot read"),
        "{e:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn formatdate_and_timestamp() {
    assert_eq!(
        eval("${formatdate(\"DD MMM YYYY hh:mm ZZZ\", \"2018-01-02T23:12:01Z\")}").unwrap(),
        s("02 Jan 2018 23:12 UTC")
    );
    let ts = eval("${timestamp()}").unwrap();
    let Value::Str(ts) = ts else { panic!() };
    assert!(ts.ends_with('Z') && ts.len() == 20, "{ts}");
    let day = eval("${formatdate(\"YYYYMMDD\", timestamp())}").unwrap();
    assert_eq!(day, s(&ts[..10].replace('-', "")));
    assert!(err("${formatdate(\"YYYY\", \"last week\")}")
        .contains("t.toml:1:3: formatdate(): `last week` is not an RFC 3339 timestamp"));
}
