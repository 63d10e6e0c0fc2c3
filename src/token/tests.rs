use super::*;
use crate::keys::tests::seed_material;

fn signer() -> (Signer, TrustedKeys) {
    let keys = seed_material();
    let mut trusted = TrustedKeys::default();
    trusted.add(&keys.kid, keys.public.clone());
    (
        Signer::new(
            &keys,
            "api.ly.fish.local",
            "registry.ly.fish.local",
            Duration::from_secs(3600),
            X5cMode::Auto,
        ),
        trusted,
    )
}

#[test]
fn claims_have_the_shape_registries_need() {
    let (s, _) = signer();
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let issued = s
        .issue(
            "alice",
            vec![Scope::new("repository", "org/app", &["pull"])],
            now,
        )
        .expect("sign");
    let parts: Vec<&str> = issued.token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let head: serde_json::Value =
        serde_json::from_slice(&BASE64URL_NOPAD.decode(parts[0].as_bytes()).expect("b64"))
            .expect("json");
    assert_eq!(head["alg"], "ES256");
    assert_eq!(head["typ"], "JWT");
    assert_eq!(head["kid"], crate::keys::tests::SEED_KID);
    assert_eq!(
        BASE64URL_NOPAD
            .decode(parts[2].as_bytes())
            .expect("sig")
            .len(),
        64,
        "raw r||s"
    );
    let body: serde_json::Value =
        serde_json::from_slice(&BASE64URL_NOPAD.decode(parts[1].as_bytes()).expect("b64"))
            .expect("json");
    assert_eq!(body["iss"], "api.ly.fish.local");
    assert_eq!(body["sub"], "alice");
    assert!(body["aud"].is_string(), "aud must be a string");
    // Both backdated: zot refuses an iat after its clock with no leeway.
    assert_eq!(body["iat"], 1_800_000_000u64 - 10);
    assert_eq!(body["nbf"], 1_800_000_000u64 - 10);
    assert_eq!(body["exp"], 1_800_003_600u64);
    assert!(body["exp"].is_u64() && body["nbf"].is_u64() && body["iat"].is_u64());
    let jti = body["jti"].as_str().expect("jti");
    assert_eq!(
        uuid::Uuid::parse_str(jti).expect("uuid").get_version_num(),
        4
    );
    assert_eq!(
        body["access"],
        serde_json::json!([{"type":"repository","name":"org/app","actions":["pull"]}])
    );
    let again = s.issue("alice", vec![], now).expect("sign");
    assert_ne!(again.claims.jti, issued.claims.jti);
}

fn header(token: &str) -> serde_json::Value {
    let head = token.split('.').next().expect("header");
    serde_json::from_slice(&BASE64URL_NOPAD.decode(head.as_bytes()).expect("b64")).expect("json")
}

#[test]
fn x5c_only_while_the_chain_outlives_the_token() {
    let g = crate::keys::generate::generate("iss.test", 30).expect("generate");
    let keys = KeyMaterial::load(g.cert_pem.as_bytes(), g.key_pem.as_bytes(), None).expect("loads");
    let ttl = Duration::from_secs(3600);
    let at = |unix: i64| UNIX_EPOCH + Duration::from_secs(unix as u64);
    let auto = Signer::new(&keys, "iss.test", "svc", ttl, X5cMode::Auto);
    let now = SystemTime::now();
    let h = header(&auto.issue("a", vec![], now).expect("sign").token);
    assert_eq!(h["kid"], keys.kid.as_str(), "kid stays in every token");
    assert_eq!(
        h["x5c"],
        serde_json::json!([data_encoding::BASE64.encode(&keys.cert_der)]),
        "standard base64 of the DER, leaf first"
    );
    // The last second at which a token still outlives... and the first at which it does not.
    let last = keys.not_after - 3600 - REGISTRY_LEEWAY as i64;
    assert!(header(&auto.issue("a", vec![], at(last)).expect("sign").token)["x5c"].is_array());
    let h = header(&auto.issue("a", vec![], at(last + 1)).expect("sign").token);
    assert!(h.get("x5c").is_none(), "{h}");
    assert_eq!(h["kid"], keys.kid.as_str());
    // Before the certificate's notBefore: no x5c either.
    let early = at(keys.not_before - 1);
    assert!(header(&auto.issue("a", vec![], early).expect("sign").token)
        .get("x5c")
        .is_none());

    let always = Signer::new(&keys, "iss.test", "svc", ttl, X5cMode::Always);
    let h = header(
        &always
            .issue("a", vec![], at(keys.not_after + 1))
            .expect("sign")
            .token,
    );
    assert!(h["x5c"].is_array());
    let never = Signer::new(&keys, "iss.test", "svc", ttl, X5cMode::Never);
    assert!(header(&never.issue("a", vec![], now).expect("sign").token)
        .get("x5c")
        .is_none());
}

#[test]
fn verifies_its_own_tokens_and_refuses_tampering() {
    let (s, trusted) = signer();
    let now = SystemTime::now();
    let t = s.issue("bob", vec![], now).expect("sign").token;
    let leeway = Duration::from_secs(60);
    let claims = trusted
        .verify(
            &t,
            "api.ly.fish.local",
            "registry.ly.fish.local",
            leeway,
            now,
        )
        .expect("valid");
    assert_eq!(claims.sub, "bob");
    assert_eq!(
        trusted.verify(&t, "other", "registry.ly.fish.local", leeway, now),
        Err(VerifyError::Issuer("api.ly.fish.local".into()))
    );
    assert!(matches!(
        trusted.verify(&t, "api.ly.fish.local", "x", leeway, now),
        Err(VerifyError::Audience(_))
    ));
    let later = now + Duration::from_secs(3600 + 61);
    assert_eq!(
        trusted.verify(
            &t,
            "api.ly.fish.local",
            "registry.ly.fish.local",
            leeway,
            later
        ),
        Err(VerifyError::Expired)
    );
    // Flip one payload character: the signature no longer matches.
    let mut bytes = t.clone().into_bytes();
    let dot = t.find('.').expect("dot") + 5;
    bytes[dot] = if bytes[dot] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).expect("utf8");
    assert_eq!(
        trusted.verify(
            &tampered,
            "api.ly.fish.local",
            "registry.ly.fish.local",
            leeway,
            now
        ),
        Err(VerifyError::Signature)
    );
    assert_eq!(
        TrustedKeys::default().verify(
            &t,
            "api.ly.fish.local",
            "registry.ly.fish.local",
            leeway,
            now
        ),
        Err(VerifyError::UnknownKey(crate::keys::tests::SEED_KID.into()))
    );
}
