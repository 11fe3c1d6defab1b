"""Tests for tests/kube_emulator.py, driven through the real `kubernetes` client."""
import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import urllib3
import yaml
from kubernetes import client, config, dynamic, watch
from kubernetes.client.exceptions import ApiException

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kube_emulator import KubeEmulator  # noqa: E402

APPLY = "application/apply-patch+yaml"


# ---------------------------------------------------------------- fixtures
@pytest.fixture
def emu():
    with KubeEmulator() as e:
        yield e


@pytest.fixture
def api(emu, tmp_path):
    path = emu.write_kubeconfig(str(tmp_path / "kubeconfig"))
    api_client = config.new_client_from_config(config_file=path)
    yield api_client
    api_client.close()


@pytest.fixture
def core(api):
    return client.CoreV1Api(api)


@pytest.fixture
def apps(api):
    return client.AppsV1Api(api)


@pytest.fixture
def custom(api):
    return client.CustomObjectsApi(api)


def cm(name, labels=None, data=None, namespace=None):
    meta = {"name": name}
    if labels:
        meta["labels"] = labels
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data or {"k": "v"}}


def deployment(name, replicas=2, image="nginx:1.27"):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "main", "image": image}]}}}}


def crd_body(group="example.com", plural="widgets", kind="Widget", scope="Namespaced"):
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": scope,
                     "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "shortNames": ["wd"]},
                     "versions": [{"name": "v1", "served": True, "storage": True,
                                   "subresources": {"status": {}},
                                   "schema": {"openAPIV3Schema": {"type": "object",
                                                                  "x-kubernetes-preserve-unknown-fields": True}}}]}}


def apply_raw(api_client, path, body, manager="tester", force=True, extra_query=()):
    """Server-side apply exactly the way a caller of ApiClient.call_api does it."""
    query = [("fieldManager", manager)] + ([("force", "true")] if force else []) + list(extra_query)
    return api_client.call_api(path, "PATCH", query_params=query,
                               header_params={"Content-Type": APPLY, "Accept": "application/json"},
                               body=body, response_types_map={200: "object", 201: "object"},
                               auth_settings=["BearerToken"], _return_http_data_only=True)


def error_body(exc):
    return json.loads(exc.body)


# ---------------------------------------------------------------- basics
def test_kubeconfig_points_at_emulator(emu, tmp_path):
    path = emu.write_kubeconfig(str(tmp_path / "kc"), context="ctx1", namespace="team")
    data = yaml.safe_load(open(path))
    assert data["current-context"] == "ctx1"
    assert data["clusters"][0]["cluster"]["server"] == emu.url
    assert data["contexts"][0]["context"]["namespace"] == "team"
    assert data["users"][0]["user"]["token"]
    api_client = config.new_client_from_config(config_file=path)
    try:
        assert client.VersionApi(api_client).get_code().git_version == "v1.34.0"
    finally:
        api_client.close()


def test_discovery(api):
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]
    groups = {g.name: g for g in client.ApisApi(api).get_api_versions().groups}
    for name in ("apps", "rbac.authorization.k8s.io", "apiextensions.k8s.io", "batch"):
        assert name in groups
    assert groups["apps"].preferred_version.group_version == "apps/v1"
    core_resources = {r.name: r for r in client.CoreV1Api(api).get_api_resources().resources}
    assert core_resources["configmaps"].namespaced is True
    assert core_resources["configmaps"].kind == "ConfigMap"
    assert "list" in core_resources["configmaps"].verbs
    assert core_resources["namespaces"].namespaced is False
    assert "pods/log" in core_resources
    apps_resources = {r.name: r for r in client.AppsV1Api(api).get_api_resources().resources}
    assert apps_resources["deployments"].kind == "Deployment"
    rbac = {r.name: r for r in client.RbacAuthorizationV1Api(api).get_api_resources().resources}
    assert rbac["clusterroles"].namespaced is False
    with pytest.raises(ApiException) as err:
        client.CustomObjectsApi(api).list_namespaced_custom_object("nope.io", "v1", "default", "things")
    assert err.value.status == 404


def test_create_get_list_delete(core, emu):
    created = core.create_namespaced_config_map("default", cm("alpha", data={"a": "1"}))
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert created.metadata.namespace == "default"
    assert int(created.metadata.resource_version) > 0
    got = core.read_namespaced_config_map("alpha", "default")
    assert got.data == {"a": "1"} and got.metadata.uid == created.metadata.uid
    raw = json.loads(core.list_namespaced_config_map("default", _preload_content=False).data)
    assert raw["kind"] == "ConfigMapList" and raw["apiVersion"] == "v1"
    assert raw["metadata"]["resourceVersion"]
    # like a real API server: the items of a built-in list carry no kind/apiVersion (the list does)
    assert [(i.get("kind"), i.get("apiVersion"), i["metadata"]["name"]) for i in raw["items"]] == [(None, None, "alpha")]
    status = core.delete_namespaced_config_map("alpha", "default")
    assert status.status == "Success"
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("alpha", "default")
    assert err.value.status == 404
    body = error_body(err.value)
    assert body["kind"] == "Status" and body["reason"] == "NotFound" and body["code"] == 404
    assert body["details"] == {"name": "alpha", "kind": "configmaps"}
    with pytest.raises(ApiException) as err:
        core.delete_namespaced_config_map("alpha", "default")
    assert err.value.status == 404


@pytest.mark.parametrize("selector,expected", [
    ("app=web", {"web1", "web2"}),
    ("app==web", {"web1", "web2"}),
    ("app!=web", {"db", "plain"}),
    ("tier", {"web1", "db"}),
    ("!tier", {"web2", "plain"}),
    ("app in (web,db)", {"web1", "web2", "db"}),
    ("app notin (web)", {"db", "plain"}),
    ("app=web,tier=front", {"web1"}),
    ("app in (db), tier", {"db"}),
])
def test_label_selectors(core, selector, expected):
    core.create_namespaced_config_map("default", cm("web1", {"app": "web", "tier": "front"}))
    core.create_namespaced_config_map("default", cm("web2", {"app": "web"}))
    core.create_namespaced_config_map("default", cm("db", {"app": "db", "tier": "back"}))
    core.create_namespaced_config_map("default", cm("plain"))
    items = core.list_namespaced_config_map("default", label_selector=selector).items
    assert {i.metadata.name for i in items} == expected


def test_field_selectors_and_cluster_wide_list(core, emu):
    core.create_namespace({"metadata": {"name": "other"}})
    core.create_namespaced_config_map("default", cm("one"))
    core.create_namespaced_config_map("other", cm("one"))
    core.create_namespaced_config_map("other", cm("two"))
    emu.settle()  # like KCM, the emulator publishes kube-root-ca.crt into every new namespace
    all_items = core.list_config_map_for_all_namespaces().items
    assert {(i.metadata.namespace, i.metadata.name) for i in all_items} == {
        ("default", "one"), ("other", "kube-root-ca.crt"), ("other", "one"), ("other", "two")}
    by_name = core.list_config_map_for_all_namespaces(field_selector="metadata.name=one").items
    assert {i.metadata.namespace for i in by_name} == {"default", "other"}
    by_ns = core.list_config_map_for_all_namespaces(field_selector="metadata.namespace=other").items
    assert {i.metadata.name for i in by_ns} == {"kube-root-ca.crt", "one", "two"}
    both = core.list_config_map_for_all_namespaces(
        field_selector="metadata.namespace=other,metadata.name!=one").items
    assert [i.metadata.name for i in both] == ["kube-root-ca.crt", "two"]
    with pytest.raises(ApiException) as err:  # ConfigMaps support only metadata.name/namespace
        core.list_config_map_for_all_namespaces(field_selector="data.a=1")
    assert err.value.status == 400


def test_pagination(core):
    for i in range(5):
        core.create_namespaced_config_map("default", cm(f"cm-{i}"))
    first = core.list_namespaced_config_map("default", limit=2)
    assert [i.metadata.name for i in first.items] == ["cm-0", "cm-1"]
    assert first.metadata._continue and first.metadata.remaining_item_count == 3
    second = core.list_namespaced_config_map("default", limit=10, _continue=first.metadata._continue)
    assert [i.metadata.name for i in second.items] == ["cm-2", "cm-3", "cm-4"]
    assert second.metadata._continue is None


def test_duplicate_create_is_409_already_exists(core):
    core.create_namespaced_config_map("default", cm("dup"))
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", cm("dup"))
    assert err.value.status == 409
    body = error_body(err.value)
    assert body["reason"] == "AlreadyExists" and body["status"] == "Failure"
    assert body["details"]["name"] == "dup"
    assert body["message"] == 'configmaps "dup" already exists'


def test_create_namespace_rules(core):
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("missing", cm("x"))
    assert err.value.status == 404 and error_body(err.value)["details"]["kind"] == "namespaces"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", cm("x", namespace="kube-system"))
    assert err.value.status == 400 and error_body(err.value)["reason"] == "BadRequest"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", {"metadata": {}})
    assert err.value.status == 422
    for bad in ("Upper", "under_score", "-dash"):
        with pytest.raises(ApiException) as err:
            core.create_namespaced_config_map("default", cm(bad))
        assert err.value.status == 422 and error_body(err.value)["reason"] == "Invalid"
    with pytest.raises(ApiException) as err:
        core.create_namespace({"metadata": {"name": "dotted.name"}})
    assert err.value.status == 422
    names = {n.metadata.name for n in core.list_namespace().items}
    assert {"default", "kube-system", "kube-public"} <= names
    ns = core.read_namespace("default")
    assert ns.status.phase == "Active"
    assert ns.metadata.labels["kubernetes.io/metadata.name"] == "default"


def test_generate_name(core):
    a = core.create_namespaced_config_map("default", {"metadata": {"generateName": "job-"}, "data": {}})
    b = core.create_namespaced_config_map("default", {"metadata": {"generateName": "job-"}, "data": {}})
    for obj in (a, b):
        assert obj.metadata.name.startswith("job-")
        suffix = obj.metadata.name[len("job-"):]
        assert len(suffix) == 5 and suffix.isalnum() and suffix == suffix.lower()
    assert a.metadata.name != b.metadata.name
    assert core.read_namespaced_config_map(a.metadata.name, "default").metadata.generate_name == "job-"


def test_replace_conflict_and_noop(core):
    created = core.create_namespaced_config_map("default", cm("r", data={"a": "1"}))
    body = core.read_namespaced_config_map("r", "default")
    body.data = {"a": "2"}
    replaced = core.replace_namespaced_config_map("r", "default", body)
    assert replaced.data == {"a": "2"}
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    stale = core.read_namespaced_config_map("r", "default")
    stale.metadata.resource_version = created.metadata.resource_version
    stale.data = {"a": "3"}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("r", "default", stale)
    assert err.value.status == 409 and error_body(err.value)["reason"] == "Conflict"
    # a write that changes nothing keeps the resourceVersion
    same = core.replace_namespaced_config_map("r", "default", cm("r", data={"a": "2"}))
    assert same.metadata.resource_version == replaced.metadata.resource_version
    patched = core.patch_namespaced_config_map("r", "default", {"data": {"a": "2"}})
    assert patched.metadata.resource_version == replaced.metadata.resource_version
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("ghost", "default", cm("ghost"))
    assert err.value.status == 404


def test_merge_strategic_and_json_patch(core, api):
    core.create_namespaced_config_map("default", cm("p", {"keep": "me", "drop": "me"}, {"a": "1", "b": "2"}))
    # dict body -> the client sends strategic-merge-patch+json
    out = core.patch_namespaced_config_map("p", "default", {"metadata": {"labels": {"drop": None}},
                                                           "data": {"c": "3"}})
    assert out.metadata.labels == {"keep": "me"} and out.data == {"a": "1", "b": "2", "c": "3"}
    # explicit RFC 7386 merge patch
    out = core.patch_namespaced_config_map("p", "default", {"data": {"a": None}},
                                           _content_type="application/merge-patch+json")
    assert out.data == {"b": "2", "c": "3"}
    # list body -> RFC 6902 json patch
    out = core.patch_namespaced_config_map("p", "default", [
        {"op": "test", "path": "/data/b", "value": "2"},
        {"op": "add", "path": "/data/d", "value": "4"},
        {"op": "replace", "path": "/data/b", "value": "two"},
        {"op": "remove", "path": "/data/c"},
        {"op": "add", "path": "/metadata/labels/x~1y", "value": "z"},
    ])
    assert out.data == {"b": "two", "d": "4"}
    assert out.metadata.labels["x/y"] == "z"
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map("p", "default", [{"op": "test", "path": "/data/b", "value": "nope"}])
    assert err.value.status == 422
    assert core.read_namespaced_config_map("p", "default").data == {"b": "two", "d": "4"}


def test_patch_content_types_recorded(core, emu):
    core.create_namespaced_config_map("default", cm("ct"))
    emu.clear_log()
    core.patch_namespaced_config_map("ct", "default", {"data": {"x": "1"}})
    core.patch_namespaced_config_map("ct", "default", [{"op": "add", "path": "/data/y", "value": "2"}])
    types = [r["content_type"] for r in emu.write_requests()]
    assert types == ["application/strategic-merge-patch+json", "application/json-patch+json"]


# ---------------------------------------------------------------- server-side apply
def test_server_side_apply_create_then_identical_keeps_resource_version(api, core, emu):
    body = cm("ssa", {"app": "x"}, {"a": "1", "b": "2"}, namespace="default")
    path = "/api/v1/namespaces/default/configmaps/ssa"
    first = apply_raw(api, path, json.dumps(body))  # a pre-serialised JSON string body
    assert emu.requests[-1]["status"] == 201 and emu.requests[-1]["content_type"] == APPLY
    assert first["data"] == {"a": "1", "b": "2"}
    second = apply_raw(api, path, body)  # a dict body
    assert emu.requests[-1]["status"] == 200
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    third = apply_raw(api, path, yaml.safe_dump(body))  # YAML text
    assert third["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    managers = [m.manager for m in core.read_namespaced_config_map("ssa", "default").metadata.managed_fields]
    assert managers == ["tester"]


def test_server_side_apply_removes_fields_no_longer_applied(api, core):
    path = "/api/v1/namespaces/default/configmaps/ssa2"
    apply_raw(api, path, cm("ssa2", {"app": "x", "old": "y"}, {"a": "1", "b": "2"}))
    # another writer adds a field the applier does not own: it must survive
    core.patch_namespaced_config_map("ssa2", "default", {"data": {"other": "o"}})
    out = apply_raw(api, path, cm("ssa2", {"app": "x"}, {"a": "1"}))
    assert out["data"] == {"a": "1", "other": "o"}
    assert out["metadata"]["labels"] == {"app": "x"}
    # lists are replaced atomically, maps merge
    dep_path = "/apis/apps/v1/namespaces/default/deployments/web"
    apply_raw(api, dep_path, deployment("web", replicas=1))
    d = deployment("web", replicas=3)
    d["spec"]["template"]["spec"]["containers"] = [{"name": "other", "image": "busybox"}]
    out = apply_raw(api, dep_path, d)
    assert out["spec"]["replicas"] == 3
    assert [(c["name"], c["image"]) for c in out["spec"]["template"]["spec"]["containers"]] == [("other", "busybox")]
    assert out["metadata"]["generation"] == 2


def test_server_side_apply_rules(api, core, emu):
    path = "/api/v1/namespaces/default/configmaps/rules"
    with pytest.raises(ApiException) as err:
        api.call_api(path, "PATCH", header_params={"Content-Type": APPLY, "Accept": "application/json"},
                     body=cm("rules"), response_types_map={200: "object"}, auth_settings=["BearerToken"])
    assert err.value.status == 422  # fieldManager is required (PatchOptions is invalid)
    apply_raw(api, path, cm("rules", data={"shared": "a"}), manager="one")
    with pytest.raises(ApiException) as err:
        apply_raw(api, path, cm("rules", data={"shared": "b"}), manager="two", force=False)
    assert err.value.status == 409 and error_body(err.value)["reason"] == "Conflict"
    out = apply_raw(api, path, cm("rules", data={"shared": "b"}), manager="two", force=True)
    assert out["data"] == {"shared": "b"}
    with pytest.raises(ApiException) as err:
        apply_raw(api, "/api/v1/namespaces/nowhere/configmaps/x", cm("x"))
    assert err.value.status == 404
    # through the typed API with an explicit content type
    res = core.patch_namespaced_config_map("typed", "default", cm("typed", data={"t": "1"}),
                                           field_manager="typed", force=True, _content_type=APPLY)
    assert res.data == {"t": "1"}


def test_dynamic_client_server_side_apply(api):
    dc = dynamic.DynamicClient(api)
    cms = dc.resources.get(api_version="v1", kind="ConfigMap")
    out = dc.server_side_apply(cms, body=cm("dyn", namespace="default", data={"d": "1"}), field_manager="dyn")
    assert out.data.d == "1"
    assert dc.get(cms, name="dyn", namespace="default").metadata.name == "dyn"


# ---------------------------------------------------------------- dry run, generation, status
def test_dry_run_stores_nothing(core, api, emu):
    rv_before = core.list_namespaced_config_map("default").metadata.resource_version
    out = core.create_namespaced_config_map("default", cm("dry"), dry_run="All")
    assert out.metadata.name == "dry"
    assert emu.get("ConfigMap", "dry") is None
    apply_raw(api, "/api/v1/namespaces/default/configmaps/dry", cm("dry"), extra_query=[("dryRun", "All")])
    assert emu.get("configmaps", "dry") is None
    core.create_namespaced_config_map("default", cm("real", data={"a": "1"}))
    rv = emu.get("cm", "real")["metadata"]["resourceVersion"]
    out = core.patch_namespaced_config_map("real", "default", {"data": {"a": "2"}}, dry_run="All")
    assert out.data == {"a": "2"}
    assert emu.get("cm", "real")["data"] == {"a": "1"}
    core.delete_namespaced_config_map("real", "default", dry_run="All")
    assert emu.get("cm", "real")["metadata"]["resourceVersion"] == rv
    assert int(rv) == int(rv_before) + 1


def test_generation_and_ready_deployment(apps, emu):
    created = apps.create_namespaced_deployment("default", deployment("web", replicas=3))
    assert created.metadata.generation == 1
    emu.settle()  # like KCM, the simulated controller writes the status a moment after the POST
    st = apps.read_namespaced_deployment("web", "default").status
    assert (st.replicas, st.ready_replicas, st.available_replicas, st.updated_replicas) == (3, 3, 3, 3)
    assert st.observed_generation == 1
    assert {c.type: c.status for c in st.conditions}["Available"] == "True"
    labelled = apps.patch_namespaced_deployment("web", "default", {"metadata": {"labels": {"x": "y"}}})
    assert labelled.metadata.generation == 1
    scaled = apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 5}})
    emu.settle()
    scaled = apps.read_namespaced_deployment("web", "default")
    assert scaled.metadata.generation == 2 and scaled.status.observed_generation == 2
    assert scaled.status.ready_replicas == 5
    emu.auto_ready = False
    fresh = apps.create_namespaced_deployment("default", deployment("cold"))
    assert fresh.status is None or not fresh.status.ready_replicas
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
           "spec": {"serviceName": "db", "selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}},
                                 "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    emu.auto_ready = True
    apps.create_namespaced_stateful_set("default", sts)
    emu.settle()
    out = apps.read_namespaced_stateful_set("db", "default")
    assert out.spec.replicas == 1 and out.status.ready_replicas == 1


def test_status_subresource(apps, core, emu):
    emu.auto_ready = False  # otherwise every main-resource write recomputes a ready status
    apps.create_namespaced_deployment("default", deployment("st", replicas=2))
    apps.patch_namespaced_deployment_status("st", "default", {"status": {"replicas": 2}})
    out = apps.patch_namespaced_deployment_status("st", "default", {"status": {"readyReplicas": 0}})
    assert out.status.ready_replicas == 0 and out.status.replicas == 2
    # a main-resource write ignores status from the body
    out = apps.patch_namespaced_deployment("st", "default", {"status": {"readyReplicas": 7}})
    assert out.status.ready_replicas == 0
    read = apps.read_namespaced_deployment_status("st", "default")
    assert read.status.ready_replicas == 0
    # the simulated controller may still write the Deployment, as on a cluster: a PUT carrying a stale RV is
    # a 409, and the client reads again (optimistic concurrency)
    for attempt in range(5):
        emu.settle()
        body = apps.read_namespaced_deployment("st", "default")
        body.status.ready_replicas = 2
        try:
            replaced = apps.replace_namespaced_deployment_status("st", "default", body)
            break
        except ApiException as exc:
            if exc.status != 409 or attempt == 4:
                raise
    assert replaced.status.ready_replicas == 2
    core.create_namespace({"metadata": {"name": "stat"}})
    ns = core.patch_namespace_status("stat", {"status": {"phase": "Terminating"}})
    assert ns.status.phase == "Terminating"


def test_token_secret_is_filled(core, emu):
    core.create_namespaced_service_account("default", {"metadata": {"name": "robot"}})
    sec = core.create_namespaced_secret("default", {
        "metadata": {"name": "robot-token", "annotations": {"kubernetes.io/service-account.name": "robot"}},
        "type": "kubernetes.io/service-account-token"})
    assert not sec.data  # the token controller fills it a moment later, as on a real cluster
    emu.settle()
    sec = core.read_namespaced_secret("robot-token", "default")
    assert base64.b64decode(sec.data["token"]) and base64.b64decode(sec.data["ca.crt"])
    assert base64.b64decode(sec.data["namespace"]).decode() == "default"
    again = core.patch_namespaced_secret("robot-token", "default", {"metadata": {"labels": {"a": "b"}}})
    assert again.data["token"] == sec.data["token"]
    plain = core.create_namespaced_secret("default", {"metadata": {"name": "plain"}, "stringData": {"u": "me"}})
    assert plain.type == "Opaque" and plain.data == {"u": base64.b64encode(b"me").decode()}
    emu.auto_token = False
    cold = core.create_namespaced_secret("default", {
        "metadata": {"name": "cold", "annotations": {"kubernetes.io/service-account.name": "robot"}},
        "type": "kubernetes.io/service-account-token"})
    assert not cold.data


def test_rbac_and_services(api, core):
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_cluster_role({"metadata": {"name": "reader"},
                              "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})
    rbac.create_cluster_role_binding({"metadata": {"name": "reader"},
                                      "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                                  "name": "reader"},
                                      "subjects": [{"kind": "ServiceAccount", "name": "x", "namespace": "default"}]})
    rbac.create_namespaced_role("default", {"metadata": {"name": "r"}, "rules": []})
    rbac.create_namespaced_role_binding("default", {"metadata": {"name": "rb"},
                                                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                                                "kind": "Role", "name": "r"}})
    assert rbac.read_cluster_role("reader").rules[0].verbs == ["get"]
    assert [b.metadata.name for b in rbac.list_namespaced_role_binding("default").items] == ["rb"]
    assert rbac.read_cluster_role_binding("reader").metadata.namespace is None
    svc = core.create_namespaced_service("default", {"metadata": {"name": "web"},
                                                     "spec": {"selector": {"a": "b"}, "ports": [{"port": 80}]}})
    assert svc.spec.cluster_ip and svc.spec.type == "ClusterIP" and svc.spec.ports[0].target_port == 80


# ---------------------------------------------------------------- CRDs and custom resources
def test_crd_registration_and_custom_resources(api, custom, emu):
    ext = client.ApiextensionsV1Api(api)
    created = ext.create_custom_resource_definition(crd_body())
    assert not created.status.conditions  # Established comes a moment later; until then no routes
    emu.settle()
    created = ext.read_custom_resource_definition("widgets.example.com")
    assert {c.type: c.status for c in created.status.conditions} == {"Established": "True", "NamesAccepted": "True"}
    groups = [g.name for g in client.ApisApi(api).get_api_versions().groups]
    assert "example.com" in groups
    resources = api.call_api("/apis/example.com/v1", "GET", response_types_map={200: "object"},
                             auth_settings=["BearerToken"], _return_http_data_only=True)
    widgets = next(r for r in resources["resources"] if r["name"] == "widgets")
    assert widgets["namespaced"] is True and widgets["kind"] == "Widget" and "create" in widgets["verbs"]

    body = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1", "labels": {"c": "red"}},
            "spec": {"size": 1}}
    out = custom.create_namespaced_custom_object("example.com", "v1", "default", "widgets", body)
    assert out["metadata"]["uid"] and out["metadata"]["generation"] == 1
    assert custom.get_namespaced_custom_object("example.com", "v1", "default", "widgets", "w1")["spec"] == {"size": 1}
    listed = custom.list_namespaced_custom_object("example.com", "v1", "default", "widgets", label_selector="c=red")
    assert listed["kind"] == "WidgetList" and [i["metadata"]["name"] for i in listed["items"]] == ["w1"]
    assert listed["items"][0]["kind"] == "Widget"
    patched = custom.patch_namespaced_custom_object("example.com", "v1", "default", "widgets", "w1",
                                                    {"spec": {"size": 2}})
    assert patched["spec"] == {"size": 2} and patched["metadata"]["generation"] == 2
    st = custom.patch_namespaced_custom_object_status("example.com", "v1", "default", "widgets", "w1",
                                                      {"status": {"phase": "Ready"}})
    assert st["status"] == {"phase": "Ready"}
    all_ns = custom.list_cluster_custom_object("example.com", "v1", "widgets")
    assert len(all_ns["items"]) == 1
    with pytest.raises(ApiException) as err:
        custom.patch_namespaced_custom_object("example.com", "v1", "default", "widgets", "w1", {"spec": {}},
                                              _content_type="application/strategic-merge-patch+json")
    assert err.value.status == 415
    custom.delete_namespaced_custom_object("example.com", "v1", "default", "widgets", "w1")
    with pytest.raises(ApiException) as err:
        custom.get_namespaced_custom_object("example.com", "v1", "default", "widgets", "w1")
    assert err.value.status == 404

    custom.create_namespaced_custom_object("example.com", "v1", "default", "widgets", body)
    ext.delete_custom_resource_definition("widgets.example.com")
    assert emu.objects("CustomResourceDefinition") == []
    with pytest.raises(ApiException) as err:
        custom.list_namespaced_custom_object("example.com", "v1", "default", "widgets")
    assert err.value.status == 404
    # re-creating the CRD does not resurrect the old custom resources
    ext.create_custom_resource_definition(crd_body())
    assert custom.list_namespaced_custom_object("example.com", "v1", "default", "widgets")["items"] == []


def test_cluster_scoped_crd_and_invalid_crd(api, custom, emu):
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(crd_body(plural="gadgets", kind="Gadget", scope="Cluster"))
    emu.settle()
    custom.create_cluster_custom_object("example.com", "v1", "gadgets",
                                        {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}})
    assert custom.get_cluster_custom_object("example.com", "v1", "gadgets", "g")["metadata"].get("namespace") is None
    bad = crd_body()
    bad["metadata"]["name"] = "wrong.example.com"
    with pytest.raises(ApiException) as err:
        ext.create_custom_resource_definition(bad)
    assert err.value.status == 422


def test_namespace_delete_cascades(api, core, custom, emu):
    client.ApiextensionsV1Api(api).create_custom_resource_definition(crd_body())
    emu.settle()
    core.create_namespace({"metadata": {"name": "doomed"}})
    core.create_namespaced_config_map("doomed", cm("c"))
    core.create_namespaced_config_map("default", cm("survivor"))
    custom.create_namespaced_custom_object("example.com", "v1", "doomed", "widgets",
                                           {"apiVersion": "example.com/v1", "kind": "Widget",
                                            "metadata": {"name": "w"}})
    # the server answers with the Namespace (the typed client would squeeze it into a V1Status)
    deleted = json.loads(core.delete_namespace("doomed", _preload_content=False).data)
    assert deleted["kind"] == "Namespace" and deleted["status"]["phase"] == "Terminating"
    # Terminating: nothing new may be created in it, and the namespace controller empties it soon
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("doomed", cm("late"))
    assert err.value.status == 403 and error_body(err.value)["details"]["causes"][0]["reason"] == "NamespaceTerminating"
    emu.settle()
    assert emu.objects(namespace="doomed") == []
    assert emu.get("cm", "survivor") is not None
    with pytest.raises(ApiException) as err:
        core.read_namespace("doomed")
    assert err.value.status == 404
    assert custom.list_cluster_custom_object("example.com", "v1", "widgets")["items"] == []


def test_finalizers_delay_deletion(core, emu):
    core.create_namespaced_config_map("default", {"metadata": {"name": "fin", "finalizers": ["x/y"]}})
    core.delete_namespaced_config_map("fin", "default")
    held = emu.get("cm", "fin")
    assert held is not None and held["metadata"]["deletionTimestamp"]
    core.patch_namespaced_config_map("fin", "default", {"metadata": {"finalizers": None}},
                                     _content_type="application/merge-patch+json")
    assert emu.get("cm", "fin") is None


# ---------------------------------------------------------------- faults, delays, log
def test_fail_next_then_normal(core, emu):
    emu.fail_next(500, method="GET", path_contains="/configmaps")
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map("default")
    assert err.value.status == 500
    assert error_body(err.value)["reason"] == "InternalError"
    assert core.list_namespaced_config_map("default").items == []
    emu.fail_next(503, count=2, method="POST")
    core.list_namespaced_config_map("default")  # GET does not match the rule
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            core.create_namespaced_config_map("default", cm("f"))
        assert err.value.status == 503
    core.create_namespaced_config_map("default", cm("f"))
    assert [r["status"] for r in emu.write_requests()] == [503, 503, 201]


def test_delay_makes_client_time_out(core, emu):
    emu.delay_next(1.5, method="POST")
    start = time.monotonic()
    with pytest.raises((urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.MaxRetryError)):
        core.create_namespaced_config_map("default", cm("slow"), _request_timeout=0.5)
    assert time.monotonic() - start < 1.4
    # a GET delayed once is retried by urllib3's default Retry and succeeds
    emu.delay_next(0.8, method="GET", path_contains="/configmaps")
    assert core.list_namespaced_config_map("default", _request_timeout=0.5) is not None


def test_request_log(core, emu):
    emu.clear_log()
    core.create_namespaced_config_map("default", cm("logged"))
    core.read_namespaced_config_map("logged", "default")
    core.delete_namespaced_config_map("logged", "default")
    reqs = emu.requests
    assert [(r["method"], r["path"], r["status"]) for r in reqs] == [
        ("POST", "/api/v1/namespaces/default/configmaps", 201),
        ("GET", "/api/v1/namespaces/default/configmaps/logged", 200),
        ("DELETE", "/api/v1/namespaces/default/configmaps/logged", 200),
    ]
    assert reqs[0]["content_type"] == "application/json" and isinstance(reqs[0]["query"], dict)
    assert [r["method"] for r in emu.write_requests()] == ["POST", "DELETE"]
    emu.clear_log()
    assert emu.requests == []


# ---------------------------------------------------------------- hooks, helpers, logs, watch
def test_on_write_hook_marks_eventbus_ready(api, custom, emu):
    client.ApiextensionsV1Api(api).create_custom_resource_definition(
        crd_body(group="argoproj.io", plural="eventbus", kind="EventBus"))
    emu.settle()

    def ready(obj):
        obj["status"] = {"conditions": [{"type": "Deployed", "status": "True"}]}
        return obj

    emu.on_write("EventBus", ready)
    custom.create_namespaced_custom_object("argoproj.io", "v1", "default", "eventbus",
                                           {"apiVersion": "argoproj.io/v1", "kind": "EventBus",
                                            "metadata": {"name": "default"}, "spec": {"jetstream": {}}})
    assert emu.get("EventBus", "default")["status"]["conditions"][0]["status"] == "True"


def test_helpers(emu, core):
    seeded = emu.put_object({"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": "seed", "namespace": "kube-system"}, "data": {"s": "1"}})
    assert seeded["metadata"]["resourceVersion"] and emu.requests == []
    assert core.read_namespaced_config_map("seed", "kube-system").data == {"s": "1"}
    assert emu.get("configmap", "seed", "kube-system")["data"] == {"s": "1"}
    assert emu.get("ConfigMap", "seed") is None  # defaults to namespace "default"
    assert [o["metadata"]["name"] for o in emu.objects("ConfigMap")] == ["seed"]
    assert {o["metadata"]["name"] for o in emu.objects("Namespace")} == {"default", "kube-system", "kube-public"}
    emu.put_object({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Pending"}})
    assert core.read_namespaced_pod("p", "default").status.phase == "Pending"
    emu.set_status("pod", "p", {"phase": "Succeeded"})
    assert emu.get("po", "p")["status"]["phase"] == "Succeeded"
    emu.set_pod_log("default", "p", "line1\nline2\n")
    # kubernetes 36 turns a str response into "b'...'" unless the raw response is read
    assert core.read_namespaced_pod_log("p", "default", _preload_content=False).data == b"line1\nline2\n"
    assert core.read_namespaced_pod_log("p", "default", tail_lines=1, _preload_content=False).data == b"line2\n"
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("nope", "default")
    assert err.value.status == 404


def test_watch_streams_events(core):
    core.create_namespaced_config_map("default", cm("w0"))

    def later():
        time.sleep(0.3)
        core.create_namespaced_config_map("default", cm("w1"))
        core.patch_namespaced_config_map("w1", "default", {"data": {"k": "changed"}})
        core.delete_namespaced_config_map("w0", "default")

    threading.Thread(target=later, daemon=True).start()
    seen = []
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_config_map, "default", timeout_seconds=2):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 4:
            w.stop()
    assert seen == [("ADDED", "w0"), ("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w0")]


def test_standalone_process(tmp_path):
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kube_emulator.py")
    kubeconfig = tmp_path / "kc"
    proc = subprocess.Popen([sys.executable, script, "--port", "0", "--kubeconfig", str(kubeconfig)],
                            stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "/version", timeout=5) as resp:
            assert json.load(resp)["gitVersion"] == "v1.34.0"
        api_client = config.new_client_from_config(config_file=str(kubeconfig))
        try:
            assert client.CoreV1Api(api_client).read_namespace("default").metadata.name == "default"
        finally:
            api_client.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0


def test_restart_keeps_state_and_delete_collection(emu, core):
    core.create_namespaced_config_map("default", cm("a", {"grp": "x"}))
    core.create_namespaced_config_map("default", cm("b", {"grp": "x"}))
    core.create_namespaced_config_map("default", cm("c", {"grp": "y"}))
    port = emu.port
    emu.stop()
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        core.list_namespaced_config_map("default", _request_timeout=0.5)
    emu.start()
    assert emu.port == port
    core.delete_collection_namespaced_config_map("default", label_selector="grp=x")
    assert [i.metadata.name for i in core.list_namespaced_config_map("default").items] == ["c"]


def test_pods_and_jobs_are_simulated(api, core, emu):
    pod = core.create_namespaced_pod("default", {"metadata": {"name": "p"},
                                                 "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    assert pod.status.phase == "Pending"  # created unscheduled; the simulated kubelet runs it a moment later
    emu.settle()
    pod = core.read_namespaced_pod("p", "default")
    assert pod.status.phase == "Running"
    assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "True"
    assert pod.status.container_statuses[0].ready is True
    job = client.BatchV1Api(api).create_namespaced_job("default", {
        "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "c", "image": "busybox"}]}}}})
    emu.settle()
    job = client.BatchV1Api(api).read_namespaced_job("j", "default")
    assert job.status.succeeded == 1
    assert {c.type: c.status for c in job.status.conditions}["Complete"] == "True"
