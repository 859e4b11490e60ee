use super::*;

fn raw(format: &str, width: Option<i64>) -> RawOutput {
    RawOutput { format: Some(format.into()), width, ..RawOutput::default() }
}

fn four() -> Outputs {
    Outputs::parse(Some(&[raw("webp", None), raw("avif", None), raw("webp", Some(640)), raw("avif", Some(640))]))
        .unwrap()
}

#[test]
fn no_outputs_configured_is_the_go_servers_one_webp() {
    let o = Outputs::parse(None).unwrap();
    assert!(o.is_go_default());
    assert_eq!(o.specs()[0].key("photos/cat.jpg"), "photos/cat.webp");
    assert_eq!(o.ledger_key("photos/cat.jpg", 0), "photos/cat.jpg");
    // The Go name, for every key naming::webp_key handles.
    for k in ["a/b.JPG", "a.b/noext", ".hidden", "x.k.png"] {
        assert_eq!(o.specs()[0].key(k), crate::naming::webp_key(k), "{k}");
    }
}

#[test]
fn default_names_sit_beside_the_source() {
    let o = four();
    let keys: Vec<String> = o.specs().iter().map(|s| s.key("photos/cat.jpg")).collect();
    assert_eq!(keys, ["photos/cat.webp", "photos/cat.avif", "photos/cat_w640.webp", "photos/cat_w640.avif"]);
    let ids: Vec<String> = o.specs().iter().map(OutputSpec::id).collect();
    assert_eq!(ids, ["webp", "avif", "webp_w640", "avif_w640"]);
    assert_eq!(o.ledger_key("photos/cat.jpg", 1), "photos/cat.jpg#avif");
    assert!(!o.is_go_default());
}

#[test]
fn a_listed_key_inverts_to_every_output_it_could_be() {
    let o = four();
    let inv: Vec<(usize, &str)> = o.inversions("p/cat_w640.webp").collect();
    assert_eq!(inv, [(0, "p/cat_w640"), (2, "p/cat")]);
    assert_eq!(o.inversions("p/cat.avif").collect::<Vec<_>>(), [(1, "p/cat")]);
    assert_eq!(o.inversions("p/cat.jpg").count(), 0);
    // A bare suffix is no output: there is no stem.
    assert_eq!(o.inversions(".webp").count(), 0);
    assert_eq!(o.inversions("p/.webp").count(), 0);
}

#[test]
fn a_template_changes_the_name() {
    let r = RawOutput { name: Some("{stem}-{width}w.{format}".into()), ..raw("avif", Some(320)) };
    let o = Outputs::parse(Some(&[r])).unwrap();
    assert_eq!(o.specs()[0].key("a/b.png"), "a/b-320w.avif");
    assert_eq!(o.inversions("a/b-320w.avif").collect::<Vec<_>>(), [(0, "a/b")]);
}

#[test]
fn two_outputs_with_one_name_are_refused_naming_both() {
    let err = Outputs::parse(Some(&[raw("webp", Some(640)), raw("avif", None), raw("webp", Some(640))])).unwrap_err();
    assert_eq!(err, OutputsError::Collision { first: 0, second: 2, example: "photos/cat_w640.webp".into() });
    let msg = err.to_string();
    assert!(msg.contains("conversion.outputs[0]") && msg.contains("conversion.outputs[2]"), "{msg}");
    let named = RawOutput { name: Some("{stem}.{format}".into()), ..raw("webp", Some(100)) };
    assert!(matches!(
        Outputs::parse(Some(&[raw("webp", None), named])),
        Err(OutputsError::Collision { first: 0, second: 1, .. })
    ));
}

#[test]
fn bad_entries_are_refused_with_their_place() {
    let cases: Vec<(RawOutput, &str)> = vec![
        (raw("jpeg", None), "conversion.outputs[0].format must be webp or avif, got \"jpeg\""),
        (RawOutput::default(), "conversion.outputs[0].format must be webp or avif"),
        (raw("webp", Some(0)), "width must be 1 to 16383, got 0"),
        (raw("webp", Some(20000)), "width must be 1 to 16383"),
        (RawOutput { quality: Some(101.0), ..raw("avif", None) }, "quality must be 0 to 100"),
        (RawOutput { name: Some("x/{stem}.{format}".into()), ..raw("webp", None) }, "must begin with {stem}"),
        (RawOutput { name: Some("{stem}.jpg".into()), ..raw("webp", None) }, "must end with the output's extension"),
        (RawOutput { name: Some("{stem}/small.{format}".into()), ..raw("webp", None) }, "no / after {stem}"),
        (RawOutput { name: Some("{stem}_{width}.{format}".into()), ..raw("webp", None) }, "has no width"),
        (RawOutput { name: Some("{stem}_{size}.{format}".into()), ..raw("webp", None) }, "only placeholders"),
        (RawOutput { name: Some("{stem}.avif".into()), ..raw("webp", None) }, "must end with the output's extension"),
    ];
    for (r, want) in cases {
        let err = Outputs::parse(Some(std::slice::from_ref(&r))).unwrap_err().to_string();
        assert!(err.contains(want), "{r:?}: {err}");
    }
    assert_eq!(Outputs::parse(Some(&[])).unwrap_err(), OutputsError::Empty);
}
