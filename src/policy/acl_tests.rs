//! The rules' matching, one behaviour a test.

use super::*;

fn rule(account: &str, t: &str, name: &str, actions: &[&str]) -> AclRule {
    AclRule {
        account: Some(account.into()),
        group: None,
        service: None,
        ip: Vec::new(),
        resource_type: t.into(),
        name: name.into(),
        actions: actions.iter().map(|a| a.to_string()).collect(),
    }
}

fn who(name: &str) -> Identity {
    Identity::local(name)
}

fn at(who: &Identity) -> Asker<'_> {
    Asker {
        who,
        service: "registry.test",
        client: IpAddr::from([127, 0, 0, 1]),
    }
}

fn granted(acl: &Acl, who: &Identity, s: &Scope) -> Vec<String> {
    acl.grant(&at(who), s).actions
}

fn acl() -> Acl {
    Acl::compile(&[
        rule("admin", "repository", "**", &["*"]),
        rule("admin", "registry", "catalog", &["*"]),
        rule("reader", "repository", "secret/**", &[]),
        rule("reader", "repository", "**", &["pull"]),
        rule("*", "repository", "users/${account}/*", &["pull", "push"]),
        rule("", "repository", "public/*", &["pull"]),
    ])
    .expect("compile")
}

#[test]
fn intersection_and_first_match() {
    let acl = acl();
    let s = Scope::new("repository", "org/app", &["pull", "push"]);
    assert_eq!(granted(&acl, &who("admin"), &s), vec!["pull", "push"]);
    assert_eq!(granted(&acl, &who("reader"), &s), vec!["pull"]);
    // First match wins, even when it grants nothing.
    assert!(granted(
        &acl,
        &who("reader"),
        &Scope::new("repository", "secret/x", &["pull"])
    )
    .is_empty());
    assert!(granted(&acl, &who("stranger"), &s).is_empty());
}

#[test]
fn account_expansion_and_anonymous() {
    let acl = acl();
    let own = Scope::new("repository", "users/carol/app", &["push"]);
    assert_eq!(granted(&acl, &who("carol"), &own), vec!["push"]);
    assert!(granted(&acl, &who("dave"), &own).is_empty());
    let public = Scope::new("repository", "public/app", &["pull", "push"]);
    assert_eq!(granted(&acl, &Identity::anonymous(), &public), vec!["pull"]);
    // "*" is any authenticated user, not the anonymous one.
    assert!(granted(
        &acl,
        &Identity::anonymous(),
        &Scope::new("repository", "users//x", &["pull"])
    )
    .is_empty());
}

#[test]
fn catalog_and_star_actions() {
    let acl = acl();
    let catalog = Scope::new("registry", "catalog", &["*"]);
    assert_eq!(granted(&acl, &who("admin"), &catalog), vec!["*"]);
    assert!(granted(&acl, &who("reader"), &catalog).is_empty());
    // A type mismatch does not match: a repository named "catalog" is not the catalog.
    assert!(granted(
        &acl,
        &who("reader"),
        &Scope::new("repository", "catalog", &["*"])
    )
    .is_empty());
    assert_eq!(
        granted(
            &acl,
            &who("reader"),
            &Scope::new("repository", "a", &["pull", "delete"])
        ),
        vec!["pull"]
    );
}

#[test]
fn groups_and_upstream_rules() {
    let mut admins = rule("*", "repository", "**", &["*"]);
    admins.account = None;
    admins.group = Some("admins".into());
    let acl = Acl::compile(&[
        admins,
        rule("*", "repository", "fleet/**", &["pull", "upstream"]),
    ])
    .expect("compile");
    let mut eve = who("eve");
    eve.groups = vec!["devs".into(), "admins".into()];
    let s = Scope::new("repository", "fleet/app", &["pull", "push"]);
    assert_eq!(
        acl.grant(&at(&eve), &s),
        Grant {
            actions: vec!["pull".into(), "push".into()],
            ask_upstream: false,
            rule: Some(0)
        }
    );
    assert_eq!(
        acl.grant(&at(&who("frank")), &s),
        Grant {
            actions: vec!["pull".into()],
            ask_upstream: true,
            rule: Some(1)
        }
    );
    assert!(acl.uses_upstream());
    assert!(granted(
        &acl,
        &who("frank"),
        &Scope::new("repository", "other", &["pull"])
    )
    .is_empty());
}

#[test]
fn bad_rules_are_startup_errors() {
    let err = Acl::compile(&[rule("a", "repository", "x", &["pul"])]).expect_err("action");
    assert!(err.to_string().contains("acl[0].actions"), "{err}");
    let mut r = rule("a", "repository", "x", &["pull"]);
    r.account = None;
    assert!(Acl::compile(&[r]).is_err(), "neither account nor group");
    assert!(Acl::compile(&[rule("a", "Repo", "x", &["pull"])]).is_err());
}

fn asker<'a>(who: &'a Identity, service: &'a str, client: [u8; 4]) -> Asker<'a> {
    Asker {
        who,
        service,
        client: IpAddr::from(client),
    }
}

#[test]
fn service_and_networks_narrow_a_rule() {
    let mut staging = rule("*", "repository", "**", &["pull", "push"]);
    staging.service = Some("staging.*".into());
    let mut builders = rule("", "repository", "public/*", &["pull"]);
    builders.ip = vec!["10.0.0.0/8".into(), "192.0.2.7".into()];
    let acl = Acl::compile(&[staging, builders]).expect("compile");
    let s = Scope::new("repository", "org/app", &["push"]);
    let alice = who("alice");
    assert_eq!(
        acl.grant(&asker(&alice, "staging.test", [127, 0, 0, 1]), &s)
            .rule,
        Some(0)
    );
    assert_eq!(
        acl.grant(&asker(&alice, "registry.test", [127, 0, 0, 1]), &s)
            .rule,
        None
    );
    let anon = Identity::anonymous();
    let public = Scope::new("repository", "public/app", &["pull"]);
    for (client, rule) in [
        ([10, 1, 2, 3], Some(1)),
        ([192, 0, 2, 7], Some(1)),
        ([192, 0, 2, 8], None),
    ] {
        assert_eq!(
            acl.grant(&asker(&anon, "registry.test", client), &public)
                .rule,
            rule,
            "{client:?}"
        );
    }
    // A v4 client on a dual-stack socket is the same client.
    let mapped = Asker {
        client: "::ffff:10.1.2.3".parse().expect("ip"),
        ..asker(&anon, "registry.test", [0, 0, 0, 0])
    };
    assert_eq!(acl.grant(&mapped, &public).rule, Some(1));
    // A network written v4-mapped means the v4 one.
    let mut mapped_net = rule("", "repository", "public/*", &["pull"]);
    mapped_net.ip = vec!["::ffff:10.0.0.0/104".into()];
    let acl = Acl::compile(&[mapped_net]).expect("compile");
    assert_eq!(
        acl.grant(&asker(&anon, "registry.test", [10, 9, 9, 9]), &public)
            .rule,
        Some(0)
    );
}

#[test]
fn misses_name_the_first_condition_that_failed() {
    let mut by_group = rule("*", "repository", "org/*", &["pull"]);
    by_group.account = None;
    by_group.group = Some("devs".into());
    let mut by_service = rule("*", "repository", "org/*", &["pull"]);
    by_service.service = Some("staging.test".into());
    let mut by_ip = rule("*", "repository", "org/*", &["pull"]);
    by_ip.ip = vec!["10.0.0.0/8".into()];
    let acl = Acl::compile(&[
        rule("admin", "repository", "**", &["*"]),
        by_group,
        rule("*", "registry", "catalog", &["*"]),
        rule("*", "repository", "other/*", &["pull"]),
        by_service,
        by_ip,
        rule("*", "repository", "org/*", &["pull"]),
    ])
    .expect("compile");
    let bob = who("bob");
    let at = asker(&bob, "registry.test", [127, 0, 0, 1]);
    let s = Scope::new("repository", "org/app", &["pull"]);
    let grant = acl.grant(&at, &s);
    assert_eq!(grant.rule, Some(6));
    assert_eq!(
        acl.misses(&at, &s, grant.rule),
        vec![
            (0, Miss::Account),
            (1, Miss::Group),
            (2, Miss::Type),
            (3, Miss::Name),
            (4, Miss::Service),
            (5, Miss::Ip)
        ]
    );
}

#[test]
fn a_rule_an_earlier_one_covers_is_named() {
    let mut team = rule("*", "repository", "team/**", &["pull"]);
    team.ip = vec!["10.1.0.0/16".into()];
    let mut wide_net = rule("*", "repository", "team/**", &["push"]);
    wide_net.ip = vec!["10.0.0.0/8".into()];
    let acl = Acl::compile(&[
        rule("*", "repository", "**", &["pull"]),
        rule("alice", "repository", "team/app", &["push"]),
        rule("", "repository", "public/*", &["pull"]),
    ])
    .expect("compile");
    assert_eq!(acl.shadowed(), vec![(1, 0)], "anonymous is not any user");
    let warning = &acl.shadow_warnings()[0];
    assert!(
        warning.starts_with("rule acl[1] { account = \"alice\", name = \"team/app\"")
            && warning.contains("never applies: rule acl[0] { account = \"*\", name = \"**\""),
        "{warning}"
    );
    // A narrower network does not cover a wider one; the other way round it does.
    let acl = Acl::compile(&[team, wide_net.clone()]).expect("compile");
    assert!(acl.shadowed().is_empty());
    let mut narrow = rule("*", "repository", "team/x", &["pull"]);
    narrow.ip = vec!["10.1.0.0/16".into()];
    let acl = Acl::compile(&[wide_net, narrow]).expect("compile");
    assert_eq!(acl.shadowed(), vec![(1, 0)]);
    // A rule for one service is not covered by one for another.
    let mut a = rule("*", "repository", "**", &["pull"]);
    a.service = Some("a.test".into());
    let mut b = rule("*", "repository", "**", &["pull"]);
    b.service = Some("b.test".into());
    assert!(Acl::compile(&[a, b])
        .expect("compile")
        .shadowed()
        .is_empty());
}

#[test]
fn bad_networks_and_services_are_startup_errors() {
    let mut r: AclRule = rule("*", "repository", "**", &["pull"]);
    r.ip = vec!["10.0.0.0/33".into()];
    let err = Acl::compile(&[r]).expect_err("cidr").to_string();
    assert!(err.contains("acl[0].ip") && err.contains("CIDR"), "{err}");
    r = rule("*", "repository", "**", &["pull"]);
    r.ip = vec!["10.1.2.3/8".into()];
    let err = Acl::compile(&[r]).expect_err("host bits").to_string();
    assert!(err.contains("did you mean 10.0.0.0/8"), "{err}");
    r = rule("*", "repository", "**", &["pull"]);
    r.service = Some("${account}.test".into());
    assert!(
        Acl::compile(&[r]).is_err(),
        "a service glob names no account"
    );
    let err = Acl::compile(&[rule("*", "repository", "${account}-x", &["pull"])])
        .expect_err("segments")
        .to_string();
    assert!(
        err.contains("acl[0].name") && err.contains("whole path segments"),
        "{err}"
    );
}

#[test]
fn a_rule_for_a_service_not_served_is_named() {
    let mut staging = rule("*", "repository", "**", &["pull"]);
    staging.service = Some("staging.*".into());
    let acl = Acl::compile(&[staging, rule("*", "repository", "x", &["pull"])]).expect("compile");
    let served = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert!(acl
        .unserved_warnings(&served(&["registry.test", "staging.test"]))
        .is_empty());
    let warnings = acl.unserved_warnings(&served(&["registry.test"]));
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].starts_with("rule acl[0] { account = \"*\", service = \"staging.*\""),
        "{warnings:?}"
    );
}

/// A small xorshift generator: the same rules and requests on every run.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
}

/// Names, accounts and groups from few pieces, so rules and requests meet often: every kind
/// of glob the index files differently (a spelled-out first segment, a wildcard or
/// `${account}` in it, a whole literal, `**`).
fn generated_rule(g: &mut Gen) -> AclRule {
    const NAMES: &[&str] = &[
        "team/**",
        "team/app",
        "team/*",
        "team",
        "te*/**",
        "*",
        "**",
        "a/b/**",
        "a/*/c",
        "a",
        "${account}/**",
        "users/${account}/*",
        "a**",
        "*/app",
        "team/a*",
        "/x",
        "**/x",
        "team**",
        "users/${account}/**",
    ];
    let mut r = rule(
        g.pick(&["alice", "bob", "*", "team*", "", "a*"]),
        "repository",
        g.pick(NAMES),
        &[],
    );
    r.actions = vec![g.pick(&["pull", "push", "*", "delete", "upstream"]).into()];
    if g.one_in(3) {
        r.account = None;
        r.group = Some(g.pick(&["dev", "ops", "*"]).into());
    }
    if g.one_in(4) {
        r.service = Some(g.pick(&["*", "registry.test", "other.*"]).into());
    }
    if g.one_in(5) {
        r.ip = vec!["10.0.0.0/8".into()];
    }
    if g.one_in(10) {
        r.resource_type = "registry".into();
        r.name = "catalog".into();
    }
    r
}

#[test]
fn the_index_decides_as_the_plain_scan_on_100000_requests() {
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let mut decided = 0;
    for _ in 0..200 {
        let count = 1 + (g.pick(&["5", "20", "60"]).parse::<usize>().expect("n"));
        let rules: Vec<AclRule> = (0..count).map(|_| generated_rule(&mut g)).collect();
        let acl = Acl::compile(&rules).expect("compile");
        for _ in 0..500 {
            let mut who = who(g.pick(&["alice", "bob", "team1", "a", "", "team/app"]));
            who.groups = vec![g.pick(&["dev", "ops", "qa"]).into()];
            let name = match g.pick(&["1", "2", "3"]) {
                "1" => g
                    .pick(&["team", "a", "alice", "catalog", "x", "/x", "teamx"])
                    .to_string(),
                n => (0..n.parse::<usize>().expect("n"))
                    .map(|_| g.pick(&["team", "a", "b", "c", "app", "alice", "users", "tea", "x"]))
                    .collect::<Vec<_>>()
                    .join("/"),
            };
            let kind = if g.one_in(8) {
                "registry"
            } else {
                "repository"
            };
            let scope = Scope::new(kind, &name, &["pull", "push"]);
            let asker = asker(
                &who,
                g.pick(&["registry.test", "other.test"]),
                [g.pick(&["10", "192"]).parse().expect("octet"), 0, 0, 1],
            );
            let indexed = acl.grant(&asker, &scope);
            assert_eq!(
                indexed,
                acl.grant_by_scan(&asker, &scope),
                "{scope:?} {rules:#?}"
            );
            decided += usize::from(indexed.rule.is_some());
        }
    }
    // The generator is useful only if both answers are common: a rule decides, none does.
    assert!(
        (30_000..70_000).contains(&decided),
        "{decided} of 100,000 decided"
    );
}

#[test]
fn the_index_finds_every_shadowed_rule_the_plain_scan_finds() {
    let mut g = Gen(0x2545_f491_4f6c_dd1d);
    for _ in 0..300 {
        let rules: Vec<AclRule> = (0..40).map(|_| generated_rule(&mut g)).collect();
        let acl = Acl::compile(&rules).expect("compile");
        let scan: Vec<(usize, usize)> = (0..acl.rules.len())
            .filter_map(|j| {
                let i = acl.rules[..j]
                    .iter()
                    .position(|r| r.covers(&acl.rules[j]))?;
                Some((j, i))
            })
            .collect();
        assert_eq!(acl.shadowed(), scan, "{rules:#?}");
    }
}
