//! kube-rs's real client against the Kubernetes API **simulator** (no real cluster runs
//! here): server-side apply, conflicts, dry runs, watches, rollouts, faults and the proxy.

mod common;

use std::time::Duration;

use axum::http::Request;
use common::{Ctx, deployment, eventually, start};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use predict_buy_kube_sim::{FnRuntime, RuntimeError, Scenario, SimOptions, Started};
use serde_json::json;

const MANAGER: &str = "predict-buy";

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(resp) => *resp,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn apply(
    api: &Api<Deployment>,
    d: &Deployment,
    pp: &PatchParams,
) -> Result<Deployment, kube::Error> {
    let name = d.metadata.name.clone().unwrap();
    api.patch(&name, pp, &Patch::Apply(d)).await
}

fn completed(generation: i64, replicas: i32) -> impl Fn(Option<&Deployment>) -> bool {
    move |d: Option<&Deployment>| {
        let Some(d) = d else { return false };
        let Some(st) = &d.status else { return false };
        d.metadata.generation == Some(generation)
            && st.observed_generation == Some(generation)
            && st.updated_replicas == Some(replicas)
            && st.available_replicas == Some(replicas)
            && st.replicas == Some(replicas)
    }
}

fn progressing_reason(d: &Deployment) -> Option<String> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Progressing")?
        .reason
        .clone()
}

#[tokio::test]
async fn server_side_apply_conflicts_force_and_dry_run() {
    let Ctx { sim, client, .. } = start(SimOptions::default().namespace("nonprod")).await;
    let api: Api<Deployment> = Api::namespaced(client, "nonprod");
    let d = deployment("web", 2, "predict-buy:0.1.0", "v0.1.0");
    let created = apply(&api, &d, &PatchParams::apply(MANAGER)).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let got = api.get("web").await.unwrap();
    assert_eq!(
        got.metadata.annotations.unwrap()["predict-buy.dev/release"],
        "v0.1.0"
    );
    let managers: Vec<String> = got
        .metadata
        .managed_fields
        .unwrap()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, [MANAGER]);

    // A second manager wanting another replica count conflicts, naming the field and owner.
    let mut other = deployment("web", 5, "predict-buy:0.1.0", "v0.1.0");
    other.metadata.annotations = None;
    let err = api_error(
        apply(&api, &other, &PatchParams::apply("autoscaler-script"))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    assert!(
        err.message.contains(".spec.replicas") && err.message.contains("\"predict-buy\""),
        "{}",
        err.message
    );
    let forced = apply(
        &api,
        &other,
        &PatchParams::apply("autoscaler-script").force(),
    )
    .await
    .unwrap();
    assert_eq!(forced.spec.unwrap().replicas, Some(5));
    assert_eq!(
        forced.metadata.generation,
        Some(2),
        "a spec change bumps the generation"
    );

    // Dry run: the answer shows the change, the stored object does not have it.
    let d2 = deployment("web", 5, "predict-buy:0.2.0", "v0.2.0");
    let dry = apply(&api, &d2, &PatchParams::apply(MANAGER).force().dry_run())
        .await
        .unwrap();
    let image = |d: &Deployment| {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .clone()
    };
    assert_eq!(image(&dry).as_deref(), Some("predict-buy:0.2.0"));
    assert_eq!(
        image(&api.get("web").await.unwrap()).as_deref(),
        Some("predict-buy:0.1.0")
    );

    // A hand edit by kubectl-edit makes our next apply conflict, never silently forced.
    sim.edit_deployment("nonprod", "web", "kubectl-edit", &json!({"spec": {"template": {"spec": {"containers": [{"name": "serve", "image": "hand:edit"}]}}}}))
        .unwrap();
    let err = api_error(
        apply(&api, &d, &PatchParams::apply(MANAGER))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert!(err.message.contains("kubectl-edit"), "{}", err.message);

    let applies = sim
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "PATCH" && r.content_type.as_deref() == Some("application/apply-patch+yaml")
        })
        .count();
    assert_eq!(applies, 5);
    assert!(
        sim.requests()
            .iter()
            .any(|r| r.query.contains("dryRun=All"))
    );
}

#[tokio::test]
async fn a_healthy_rollout_completes_and_a_new_release_makes_revision_two() {
    let Ctx { sim, client, .. } = start(SimOptions::default().namespace("nonprod")).await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "nonprod");
    apply(
        &api,
        &deployment("web", 2, "predict-buy:0.1.0", "v0.1.0"),
        &PatchParams::apply(MANAGER),
    )
    .await
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        await_condition(api.clone(), "web", completed(1, 2)),
    )
    .await
    .expect("rollout within 10 s")
    .unwrap();
    let d = api.get("web").await.unwrap();
    assert_eq!(
        progressing_reason(&d).as_deref(),
        Some("NewReplicaSetAvailable")
    );
    assert_eq!(
        d.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"],
        "1"
    );

    // Slow pods and maxUnavailable 0: a rollout never drops below two available pods.
    sim.set_arg_scenario(
        "v0.2.0",
        Scenario::Slow {
            ready_after: Duration::from_millis(300),
        },
    );
    let watch_api = api.clone();
    let lowest = tokio::spawn(async move {
        let mut lowest = i32::MAX;
        let stream = kube::runtime::watcher(watch_api, kube::runtime::watcher::Config::default());
        let mut stream = std::pin::pin!(kube::runtime::WatchStreamExt::applied_objects(stream));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Ok(Some(Ok(d))) = tokio::time::timeout_at(deadline, stream.next()).await {
            let st = d.status.clone().unwrap_or_default();
            lowest = lowest.min(st.available_replicas.unwrap_or(0));
            if completed(2, 2)(Some(&d)) {
                break;
            }
        }
        lowest
    });
    apply(
        &api,
        &deployment("web", 2, "predict-buy:0.2.0", "v0.2.0"),
        &PatchParams::apply(MANAGER),
    )
    .await
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        await_condition(api.clone(), "web", completed(2, 2)),
    )
    .await
    .expect("second rollout within 10 s")
    .unwrap();
    assert_eq!(
        lowest.await.unwrap(),
        2,
        "maxUnavailable 0 keeps both pods available"
    );

    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), "nonprod");
    let mut revisions: Vec<(String, i32)> = rs_api
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .iter()
        .map(|rs| {
            (
                rs.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"]
                    .clone(),
                rs.spec.as_ref().unwrap().replicas.unwrap(),
            )
        })
        .collect();
    revisions.sort();
    assert_eq!(revisions, [("1".to_string(), 0), ("2".to_string(), 2)]);
    let pods: Api<Pod> = Api::namespaced(client, "nonprod");
    eventually(Duration::from_secs(5), "old pods to go", || {
        sim.objects("pods", "nonprod").len() == 2
    })
    .await;
    let listed = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    for p in &listed.items {
        let args = p.spec.as_ref().unwrap().containers[0].args.clone().unwrap();
        assert!(args.contains(&"v0.2.0".to_string()));
        assert!(
            p.metadata
                .labels
                .as_ref()
                .unwrap()
                .contains_key("pod-template-hash")
        );
    }
    assert!(
        sim.requests()
            .iter()
            .any(|r| r.method == "GET" && r.query.contains("watch=true"))
    );
}

#[tokio::test]
async fn faults_are_reported_as_a_real_cluster_reports_them() {
    let options = SimOptions::default()
        .namespace("nonprod")
        .progress_deadline(Duration::from_millis(800));
    let Ctx { sim, client, .. } = start(options).await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "nonprod");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "nonprod");
    sim.set_image_scenario("img:stuck", Scenario::Stuck);
    sim.set_image_scenario("img:crash", Scenario::CrashLoop);
    sim.set_image_scenario("img:pull", Scenario::ErrImagePull);
    sim.set_image_scenario("img:big", Scenario::Unschedulable);
    for (name, image) in [
        ("stuck", "img:stuck"),
        ("crash", "img:crash"),
        ("pull", "img:pull"),
        ("big", "img:big"),
    ] {
        apply(
            &api,
            &deployment(name, 1, image, "v1.0.0"),
            &PatchParams::apply(MANAGER),
        )
        .await
        .unwrap();
    }
    let exceeded = |d: Option<&Deployment>| {
        d.and_then(progressing_reason).as_deref() == Some("ProgressDeadlineExceeded")
    };
    tokio::time::timeout(
        Duration::from_secs(10),
        await_condition(api.clone(), "stuck", exceeded),
    )
    .await
    .unwrap()
    .unwrap();

    let pod_of = |app: &'static str| {
        let pods = pods.clone();
        async move {
            pods.list(&ListParams::default().labels(&format!("app={app}")))
                .await
                .unwrap()
                .items
                .remove(0)
        }
    };
    let waiting = |p: &Pod| {
        let cs = &p.status.as_ref()?.container_statuses.as_ref()?[0];
        Some((
            cs.state.as_ref()?.waiting.as_ref()?.reason.clone()?,
            cs.restart_count,
        ))
    };
    let start = std::time::Instant::now();
    loop {
        let crash = waiting(&pod_of("crash").await);
        if crash
            .as_ref()
            .is_some_and(|(r, n)| r == "CrashLoopBackOff" && *n >= 2)
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no crash loop: {crash:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pull = pod_of("pull").await;
    let reason = waiting(&pull).map(|(r, _)| r).unwrap_or_default();
    assert!(
        reason == "ErrImagePull" || reason == "ImagePullBackOff",
        "{reason}"
    );
    let big = pod_of("big").await;
    let scheduled = big
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .unwrap();
    assert_eq!(
        (scheduled.status.as_str(), scheduled.reason.as_deref()),
        ("False", Some("Unschedulable"))
    );

    // Events are listable per object, as `kubectl describe` lists them.
    let events: Api<Event> = Api::namespaced(client.clone(), "nonprod");
    let crash_pod = pod_of("crash").await.metadata.name.unwrap();
    let evs = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={crash_pod}")))
        .await
        .unwrap();
    assert!(
        evs.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("BackOff"))
    );
    assert!(
        evs.items
            .iter()
            .all(|e| e.involved_object.name.as_deref() == Some(crash_pod.as_str()))
    );

    // A missing namespace is the real 404, an RBAC refusal the real 403.
    let missing: Api<Deployment> = Api::namespaced(client.clone(), "nope");
    let err = api_error(
        apply(
            &missing,
            &deployment("web", 1, "i", "v1.0.0"),
            &PatchParams::apply(MANAGER),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (404, "namespaces \"nope\" not found")
    );
    sim.deny("patch", "deployments.apps", Some("nonprod"));
    let err = api_error(
        apply(
            &api,
            &deployment("stuck", 1, "i", "v1.0.0"),
            &PatchParams::apply(MANAGER),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 403);
    assert_eq!(
        err.message,
        format!(
            "deployments.apps \"stuck\" is forbidden: User \"{}\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"nonprod\"",
            sim.user()
        )
    );
    assert!(
        api.get("stuck").await.is_ok(),
        "only the denied verb is refused"
    );
    let namespaces: Api<Namespace> = Api::all(client);
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "nope"}})).unwrap(),
        )
        .await
        .unwrap();
    sim.allow_all();
    apply(
        &missing,
        &deployment("web", 1, "i", "v1.0.0"),
        &PatchParams::apply(MANAGER),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn the_service_proxy_reaches_the_pod_process() {
    // Each "pod process" is a real HTTP server on 127.0.0.1 that echoes what it got.
    let runtime = FnRuntime(|c: predict_buy_kube_sim::ContainerSpec| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| RuntimeError::Refused {
                container: c.name.clone(),
                message: e.to_string(),
            })?;
        let addr = listener.local_addr().unwrap();
        let release = c.flag("--release").unwrap_or_default().to_string();
        let app = axum::Router::new()
            .route("/readyz", axum::routing::get(|| async { "ready" }))
            .route(
                "/echo",
                axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                    let release = release.clone();
                    async move {
                        let tag = headers
                            .get("x-test")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        axum::Json(json!({"release": release, "body": body, "x-test": tag}))
                    }
                }),
            );
        let server = tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        Ok(Started {
            addr: Some(addr),
            child: None,
            guard: Some(Box::new(AbortOnDrop(server))),
        })
    });
    let Ctx { sim, client, .. } =
        start(SimOptions::default().namespace("nonprod").runtime(runtime)).await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "nonprod");
    apply(
        &api,
        &deployment("web", 2, "predict-buy:0.1.0", "v0.1.0"),
        &PatchParams::apply(MANAGER),
    )
    .await
    .unwrap();
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), "nonprod")
        .patch("web", &PatchParams::apply(MANAGER), &Patch::Apply(&svc))
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        await_condition(api, "web", completed(1, 2)),
    )
    .await
    .unwrap()
    .unwrap();

    for path in ["services/web:80", "services/http:web:http"] {
        let req = Request::post(format!("/api/v1/namespaces/nonprod/{path}/proxy/echo?x=1"))
            .header("x-test", "abc")
            .body(b"hello".to_vec())
            .unwrap();
        let text = client.request_text(req).await.unwrap();
        let got: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            got,
            json!({"release": "v0.1.0", "body": "hello", "x-test": "abc"})
        );
    }
    let pod = sim.objects("pods", "nonprod").remove(0);
    let name = pod["metadata"]["name"].as_str().unwrap();
    let req = Request::get(format!(
        "/api/v1/namespaces/nonprod/pods/{name}:8080/proxy/readyz"
    ))
    .body(Vec::new())
    .unwrap();
    assert_eq!(client.request_text(req).await.unwrap(), "ready");
    let req = Request::get("/api/v1/namespaces/nonprod/services/nothing/proxy/")
        .body(Vec::new())
        .unwrap();
    assert_eq!(
        api_error(client.request_text(req).await.unwrap_err()).code,
        404
    );
}

struct AbortOnDrop(tokio::task::JoinHandle<Option<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
