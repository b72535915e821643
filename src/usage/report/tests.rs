use super::*;

fn key(dir: &std::path::Path, name: &str) -> InstanceKey {
    InstanceKey::load_or_create(&dir.join(name)).unwrap()
}

fn report(
    key: &InstanceKey,
    sequence: u64,
    previous: Option<&str>,
    from: &str,
    to: &str,
) -> String {
    let tally = Tally {
        allowed: 40,
        limited: 2,
        refused: [("USAGE_LIMIT_EXCEEDED".to_string(), 2)].into(),
        peak_concurrency: 3,
    };
    let report = UsageReport {
        format: FORMAT.into(),
        instance_id: "i-1".into(),
        instance_public_key: key.public_key_pem(),
        instance_key_fingerprint: key.fingerprint(),
        replica_id: None,
        sequence,
        previous_sha256: previous.map(|p| sha256_hex(p.as_bytes())),
        period: ReportPeriod {
            from: from.into(),
            to: to.into(),
        },
        created_at: "2026-12-01T00:00:00Z".into(),
        licenses: [("acme".to_string(), vec!["lic-1".to_string()])].into(),
        days: vec![ReportDay {
            tenant: "acme".into(),
            feature: "reports".into(),
            day: from.into(),
            tally: tally.clone(),
        }],
        totals: [("acme".to_string(), tally)].into(),
        seats: vec![ReportSeats {
            tenant: "acme".into(),
            day: from.into(),
            usage: SeatUsage {
                peak_seats: 4,
                daily_users: 7,
                fleet: false,
            },
        }],
    };
    signed_file(&report, key)
}

fn public(key: &InstanceKey) -> InstancePublicKey {
    InstancePublicKey::from_pem(&key.public_key_pem()).unwrap()
}

#[test]
fn a_chain_of_reports_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(dir.path(), "k.pem");
    let first = report(&k, 1, None, "2026-10-01", "2026-10-31");
    let second = report(&k, 2, Some(&first), "2026-11-01", "2026-11-30");
    let one = verify(first.as_bytes(), &public(&k), None).unwrap();
    assert!(!one.chained);
    assert_eq!(one.report.totals["acme"].allowed, 40);
    assert_eq!(one.report.seats[0].usage.daily_users, 7);
    let two = verify(second.as_bytes(), &public(&k), Some(first.as_bytes())).unwrap();
    assert!(two.chained);
}

#[test]
fn a_changed_count_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(dir.path(), "k.pem");
    let file = report(&k, 1, None, "2026-10-01", "2026-10-31");
    let tampered = file.replacen("\"allowed\": 40", "\"allowed\": 4", 2);
    assert_ne!(tampered, file);
    assert_eq!(
        verify(tampered.as_bytes(), &public(&k), None).unwrap_err(),
        VerifyError::BadSignature
    );
    // Reformatting the file counts as changing it: the bytes are what was signed.
    let value: serde_json::Value = serde_json::from_str(&file).unwrap();
    let reformatted = serde_json::to_string(&value).unwrap();
    assert!(verify(reformatted.as_bytes(), &public(&k), None).is_err());
}

#[test]
fn a_report_re_signed_with_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(dir.path(), "k.pem");
    let other = key(dir.path(), "other.pem");
    let forged = report(&other, 1, None, "2026-10-01", "2026-10-31");
    let err = verify(forged.as_bytes(), &public(&k), None).unwrap_err();
    assert!(matches!(err, VerifyError::OtherKey { .. }), "{err}");
    // Naming the right key but signed with another one.
    let named = forged.replace(
        &serde_json::to_string(&other.public_key_pem()).unwrap(),
        &serde_json::to_string(&k.public_key_pem()).unwrap(),
    );
    assert_eq!(
        verify(named.as_bytes(), &public(&k), None).unwrap_err(),
        VerifyError::BadSignature
    );
}

#[test]
fn replayed_reordered_and_missing_reports_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(dir.path(), "k.pem");
    let first = report(&k, 1, None, "2026-09-01", "2026-09-30");
    let second = report(&k, 2, Some(&first), "2026-10-01", "2026-10-31");
    let third = report(&k, 3, Some(&second), "2026-11-01", "2026-11-30");
    let p = public(&k);
    assert!(matches!(
        verify(second.as_bytes(), &p, Some(second.as_bytes())).unwrap_err(),
        VerifyError::Replayed { sequence: 2 }
    ));
    assert!(matches!(
        verify(second.as_bytes(), &p, Some(third.as_bytes())).unwrap_err(),
        VerifyError::Reordered { .. }
    ));
    assert!(matches!(
        verify(third.as_bytes(), &p, Some(first.as_bytes())).unwrap_err(),
        VerifyError::Missing { .. }
    ));
    let overlapping = report(&k, 2, Some(&first), "2026-09-15", "2026-10-31");
    assert!(matches!(
        verify(overlapping.as_bytes(), &p, Some(first.as_bytes())).unwrap_err(),
        VerifyError::Overlap { .. }
    ));
    let gap = report(&k, 2, Some(&first), "2026-10-02", "2026-10-31");
    assert!(matches!(
        verify(gap.as_bytes(), &p, Some(first.as_bytes())).unwrap_err(),
        VerifyError::Gap { .. }
    ));
    let other_first = report(&k, 1, None, "2026-09-01", "2026-09-29");
    assert_eq!(
        verify(second.as_bytes(), &p, Some(other_first.as_bytes())).unwrap_err(),
        VerifyError::BrokenChain
    );
    assert!(matches!(
        verify(b"{}", &p, None).unwrap_err(),
        VerifyError::Malformed(_)
    ));
}

#[test]
fn an_export_carries_the_seat_figures_of_each_day() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(dir.path(), "k.pem");
    let mut db = Database::open(dir.path()).unwrap();
    let day = parse_date("2026-11-02").unwrap();
    db.connection
        .execute_batch(&format!(
            "INSERT INTO usage_seat_hours VALUES ('acme', {h}, 3), ('acme', {h1}, 5),
                 ('acme', {next}, 9), ('beta', {h}, 1);
             INSERT INTO usage_seat_days VALUES ('acme', {day}, 7, 1), ('beta', {day}, 1, 0),
                 ('acme', {d1}, 9, 1);",
            h = day * 24 + 8,
            h1 = day * 24 + 9,
            next = (day + 1) * 24,
            d1 = day + 1,
        ))
        .unwrap();
    let reporter = Reporter {
        key: &k,
        instance_id: "i-1",
        replica_id: Some("r-1"),
    };
    let exported = export(
        &mut db,
        &reporter,
        day,
        day,
        day + 5,
        "2026-11-07T00:00:00Z",
    )
    .unwrap();
    let verified = verify(exported.file.as_bytes(), &public(&k), None).unwrap();
    let seats = &verified.report.seats;
    assert_eq!(seats.len(), 2, "{seats:?}");
    assert_eq!(
        (seats[0].tenant.as_str(), seats[0].day.as_str()),
        ("acme", "2026-11-02")
    );
    assert_eq!(
        seats[0].usage,
        SeatUsage {
            peak_seats: 5,
            daily_users: 7,
            fleet: true
        }
    );
    assert_eq!(
        seats[1].usage,
        SeatUsage {
            peak_seats: 1,
            daily_users: 1,
            fleet: false
        }
    );
    // A seat day moved out of the period breaks the signature, and a report
    // re-signed with it is inconsistent.
    let mut moved = verified.report.clone();
    moved.seats[0].day = "2026-11-05".into();
    assert!(matches!(
        verify(signed_file(&moved, &k).as_bytes(), &public(&k), None),
        Err(VerifyError::Inconsistent(_))
    ));
}
