#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;

#[test]
fn query_and_wait() {
    assert_eq!(
        query_param(Some("force=true&wait=5s"), "wait").as_deref(),
        Some("5s")
    );
    assert_eq!(query_param(Some("force"), "force").as_deref(), Some(""));
    assert_eq!(query_param(None, "force"), None);
    assert_eq!(parse_wait(Some("wait=2s")).unwrap(), Some(Duration::from_secs(2)));
    assert!(parse_wait(Some("wait=10m")).is_err());
    assert!(parse_wait(Some("wait=soon")).is_err());
}

#[test]
fn state_survives_in_the_file_and_global_disable_folds_in() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.json");
    let services: Services = Arc::new(RwLock::new(Vec::new()));
    let m = Maintenance::new(services.clone(), Some(file.clone()));
    assert!(matches!(
        m.update(Some("web"), |_| {}),
        Err(MaintenanceError::UnknownService(_))
    ));
    m.update(None, |s| {
        s.disabled = true;
        s.services.insert(
            "web".into(),
            Operator {
                weight: Some(3),
                ..Operator::default()
            },
        );
    })
    .unwrap();
    let again = Maintenance::new(services, Some(file));
    assert_eq!(again.snapshot(), m.snapshot());
    let web = again.effective("web");
    assert!(web.disabled && web.weight == Some(3));
    assert!(again.effective("other").disabled);
}
