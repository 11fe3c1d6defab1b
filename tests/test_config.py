import os
import stat

import pytest

from etlboot import config


def load(env_file, **env):
    return config.load(env_file, environ=env)


def test_defaults_and_generated_passwords_saved_with_mode_0600(env_file):
    settings = load(env_file)
    assert settings.namespace == "argo-etl"
    assert settings.minikube_cpus == 4 and isinstance(settings.minikube_cpus, int)
    password = settings.minio_root_password
    assert len(password) >= 24
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    # the second load reads the same password back and generates nothing
    again = load(env_file)
    assert again.minio_root_password == password
    assert again.generated == []
    assert settings.ftp_password != password


def test_environment_beats_env_file(env_file):
    env_file.write_text("NAMESPACE=from-file\n")
    assert load(env_file).namespace == "from-file"
    assert load(env_file, NAMESPACE="from-env").namespace == "from-env"


@pytest.mark.parametrize("line, named", [
    ("MINIKUBE_CPUS=lots", "MINIKUBE_CPUS"),
    ("MINIKUBE_CPUS=1", "MINIKUBE_CPUS"),
    ("NAMESPACE=Bad_Name", "NAMESPACE"),
    ("CLUSTER=cloud", "CLUSTER"),
    ("EVENTBUS_REPLICAS=2", "EVENTBUS_REPLICAS"),
    ("ETL_BUCKET=UPPER", "ETL_BUCKET"),
    ("HELM_TIMEOUT=ten", "HELM_TIMEOUT"),
    ("MINIO_ROOT_PASSWORD=short", "MINIO_ROOT_PASSWORD"),
    ("NAMESPAEC=x", "NAMESPACE"),  # unknown key, with a suggestion
])
def test_bad_settings_name_the_setting(env_file, line, named):
    env_file.write_text(line + "\n")
    with pytest.raises(config.ConfigError) as err:
        load(env_file)
    assert named in str(err.value)


def test_existing_cluster_requires_context_and_image(env_file):
    with pytest.raises(config.ConfigError, match="KUBE_CONTEXT"):
        load(env_file, CLUSTER="existing")
    with pytest.raises(config.ConfigError, match="ETL_IMAGE"):
        load(env_file, CLUSTER="existing", KUBE_CONTEXT="kind-x")
    s = load(env_file, CLUSTER="existing", KUBE_CONTEXT="kind-x", ETL_IMAGE="ghcr.io/me/etl:1")
    assert s.kube_context == "kind-x" and not s.uses_minikube


def test_repr_hides_secrets(env_file):
    settings = load(env_file)
    assert settings.minio_root_password not in repr(settings)
    assert settings.minio_root_password in settings.secret_values()


def test_env_example_documents_every_setting():
    from etlboot import PROJECT_ROOT

    text = (PROJECT_ROOT / ".env.example").read_text()
    assert text == config.example_env(), "regenerate: python -m etlboot.config > .env.example"
    for setting in config.SETTINGS:
        assert f"{setting.name}=" in text


def test_no_default_password_anywhere():
    for setting in config.SETTINGS:
        if setting.secret:
            assert setting.default is None


@pytest.mark.parametrize("url, ok", [
    ("", False), ("http://localhost:12000", False), ("http://10.0.0.5:12000", False),
    ("https://192.168.1.2", False), ("http://minikube:12000", False), ("https://events.example.com", True),
    ("http://203.0.113.10:12000", False),  # TEST-NET-3 documentation range counts as not public
    ("http://100.64.1.2:12000", False),  # carrier-grade NAT
    ("http://ip-10-0-0-1.eu-west-1.compute.internal:12000", False), ("http://app.localhost", False),
])
def test_public_webhook_is_required(env_file, url, ok):
    settings = load(env_file, SNS_WEBHOOK_URL=url) if url else load(env_file)
    if ok:
        assert config.require_public_webhook(settings) == url
    else:
        with pytest.raises(config.ConfigError, match="SNS"):
            config.require_public_webhook(settings)
