"""Server-side defaults, canonical forms and validation of tests/kube_emulator.py.

What a real kube-apiserver (v1.34) fills in or rejects on write, as recorded in
../shared/kube-recordings (quantities-and-defaults, deployment-status, pvc-immutability, errors,
secret-token): kept apart from the HTTP/storage emulator so that file stays readable.
"""
from __future__ import annotations

import base64
import binascii
import re
from fractions import Fraction

__all__ = ["canonical_quantity", "default_pod_spec", "default_deployment", "default_service", "default_pvc",
           "validate_metadata", "validate_configmap", "validate_secret", "KNOWN_TOP_LEVEL", "Invalid"]


class Invalid(Exception):
    """A semantic (422) validation failure: ``causes`` are (reason, field, message)."""

    def __init__(self, causes):
        super().__init__("; ".join(f"{f}: {m}" for _r, f, m in causes))
        self.causes = causes


# --------------------------------------------------------------------------- quantities
_QUANTITY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$")
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_SUFFIX = {v: k for k, v in _DECIMAL.items()}


def canonical_quantity(value):
    """The form the API server stores a resource.Quantity in: `0.5`→`500m`, `1000m`→`1`, `1024Mi`→`1Gi`,
    `1.5Gi`→`1536Mi`, `134217728`→`"134217728"`. Values that are no quantity are returned unchanged."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return value
    text = repr(value) if isinstance(value, float) else str(value)
    match = _QUANTITY.match(text.strip())
    if not match:
        return value
    number, suffix = Fraction(match.group(1)), match.group(2) or ""
    if suffix in _BINARY:
        amount = number * 2 ** _BINARY[suffix]
        if amount.denominator == 1 and abs(amount) >= 1024:
            exp = 0
            while exp < 60 and amount % 2 ** (exp + 10) == 0:
                exp += 10
            suffix_out = {v: k for k, v in _BINARY.items()}.get(exp, "")
            return f"{int(amount / 2 ** exp)}{suffix_out}"
        return _decimal(amount)
    if suffix[:1] in ("e", "E"):
        return _decimal(number * Fraction(10) ** int(suffix[1:]), exponent=True)
    return _decimal(number * Fraction(10) ** _DECIMAL[suffix])


def _decimal(amount: Fraction, exponent=False) -> str:
    # below nano precision the server rounds up
    scaled = amount * 10 ** 9
    if scaled.denominator != 1:
        amount = Fraction(-((-scaled.numerator) // scaled.denominator), 10 ** 9)
    if amount == 0:
        return "0"
    exp = -9
    while exp < 18 and (amount / Fraction(10) ** (exp + 3)).denominator == 1:
        exp += 3
    mantissa = int(amount / Fraction(10) ** exp)
    if exponent:
        return f"{mantissa}e{exp}" if exp else str(mantissa)
    return f"{mantissa}{_DECIMAL_SUFFIX[exp]}"


def _canonical_map(d):
    if isinstance(d, dict):
        for key in list(d):
            d[key] = canonical_quantity(d[key])


def _canonical_resources(resources):
    if isinstance(resources, dict):
        _canonical_map(resources.get("limits"))
        _canonical_map(resources.get("requests"))


# --------------------------------------------------------------------------- pods and workloads
def _image_pull_policy(image: str) -> str:
    name = (image or "").split("@")[0]
    tag = name.rsplit("/", 1)[-1].partition(":")[2]
    return "Always" if "@" not in (image or "") and (not tag or tag == "latest") else "IfNotPresent"


def _default_container(c):
    if not isinstance(c, dict):
        return
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("imagePullPolicy", _image_pull_policy(c.get("image", "")))
    c.setdefault("resources", {})
    _canonical_resources(c.get("resources"))
    for port in c.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")


def default_pod_spec(spec, template=True):
    """Pod spec defaults; a real Pod (not a template) also gets what admission adds."""
    if not isinstance(spec, dict):
        return
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            _default_container(c)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for vol in spec.get("volumes") or []:
        if isinstance(vol, dict) and isinstance(vol.get("emptyDir"), dict) and "sizeLimit" in vol["emptyDir"]:
            vol["emptyDir"]["sizeLimit"] = canonical_quantity(vol["emptyDir"]["sizeLimit"])
    if not template:
        spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("tolerations", [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 300}])
        spec.setdefault("priority", 0)
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")


def default_deployment(spec):
    if not isinstance(spec, dict):
        return
    if spec.get("replicas") is None:
        spec["replicas"] = 1
    strategy = spec.setdefault("strategy", {})
    if isinstance(strategy, dict):
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            rolling.setdefault("maxUnavailable", "25%")
            rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    default_pod_spec((spec.get("template") or {}).get("spec"))


def default_workload(kind, spec):
    """StatefulSet / DaemonSet / ReplicaSet / Job / CronJob: their pod templates."""
    if not isinstance(spec, dict):
        return
    if kind == "CronJob":
        job = (spec.get("jobTemplate") or {}).get("spec") or {}
        default_pod_spec((job.get("template") or {}).get("spec"))
        return
    default_pod_spec((spec.get("template") or {}).get("spec"))


def default_service(spec, allocate_ip):
    spec.setdefault("type", "ClusterIP")
    if spec["type"] != "ExternalName":
        if not spec.get("clusterIP"):
            spec["clusterIP"] = allocate_ip()
        if spec["clusterIP"] != "None":
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            if "port" in port:
                port.setdefault("targetPort", port["port"])


def default_pvc(obj, creating=True):
    spec = obj.get("spec")
    if isinstance(spec, dict):
        spec.setdefault("volumeMode", "Filesystem")
        _canonical_resources(spec.get("resources"))
    if not creating:  # the admission plugin adds it on create only; the controller removes it on delete
        return
    finalizers = obj["metadata"].setdefault("finalizers", [])
    if "kubernetes.io/pvc-protection" not in finalizers:
        finalizers.append("kubernetes.io/pvc-protection")


def pvc_immutable_change(old_spec, new_spec):
    """True if a PVC update changes more than the parts an unbound claim may change."""
    def strip(s):
        s = dict(s or {})
        s.pop("volumeAttributesClassName", None)
        if not (s.get("storageClassName")):
            s.pop("storageClassName", None)
        return s
    old, new = strip(old_spec), strip(new_spec)
    if "storageClassName" in new and "storageClassName" not in old:
        old["storageClassName"] = new["storageClassName"]  # setting it from unset is allowed
    return old != new


# --------------------------------------------------------------------------- validation
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS1123_SUB = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def _label_key_errors(key):
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUB.fullmatch(prefix)):
        return True
    return not name or len(name) > 63 or not _LABEL_NAME.fullmatch(name)


def validate_metadata(meta):
    """Causes for bad labels (key or value) of an object."""
    causes = []
    for key, value in ((meta or {}).get("labels") or {}).items():
        if _label_key_errors(str(key)):
            causes.append(("FieldValueInvalid", "metadata.labels",
                           f'Invalid value: "{key}": name part must consist of alphanumeric characters, '
                           f"'-', '_' or '.', and must start and end with an alphanumeric character"))
        value = "" if value is None else str(value)
        if len(value) > 63 or (value and not _LABEL_NAME.fullmatch(value)):
            causes.append(("FieldValueInvalid", "metadata.labels",
                           f'Invalid value: "{value}": a valid label must be an empty string or consist of '
                           f"alphanumeric characters, '-', '_' or '.', and must start and end with an "
                           f"alphanumeric character" + (": must be no more than 63 characters"
                                                         if len(value) > 63 else "")))
    return causes


def _data_key_causes(data, field):
    causes = []
    for key in (data or {}):
        if len(key) > 253 or not _CONFIG_KEY.fullmatch(key):
            causes.append(("FieldValueInvalid", f"{field}[{key}]",
                           f'Invalid value: "{key}": a valid config key must consist of alphanumeric '
                           f"characters, '-', '_' or '.'"))
    return causes


def validate_configmap(obj):
    causes = _data_key_causes(obj.get("data"), "data") + _data_key_causes(obj.get("binaryData"), "binaryData")
    size = sum(len(k) + len(str(v)) for k, v in (obj.get("data") or {}).items())
    size += sum(len(k) + len(str(v)) * 3 // 4 for k, v in (obj.get("binaryData") or {}).items())
    if size > 1024 * 1024:
        causes.append(("FieldValueTooLong", "", "Too long: must have at most 1048576 bytes"))
    return causes


def decode_secret_data(data):
    """Raise ValueError for a value that is not base64 (a decode error: 400)."""
    for key, value in (data or {}).items():
        if not isinstance(value, str):
            raise ValueError(f"Secret.data[{key}]: expected a base64 string")
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"illegal base64 data in Secret.data[{key}]") from None


_SECRET_REQUIRED = {"kubernetes.io/tls": ("tls.crt", "tls.key"),
                    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
                    "kubernetes.io/basic-auth": (), "kubernetes.io/ssh-auth": ("ssh-privatekey",)}


def validate_secret(obj):
    causes = _data_key_causes(obj.get("data"), "data")
    for key in _SECRET_REQUIRED.get(obj.get("type") or "Opaque", ()):
        if key not in (obj.get("data") or {}):
            causes.append(("FieldValueRequired", f"data[{key}]", "Required value"))
    return causes


# Top-level fields of the built-in kinds; anything else is an unknown field (a Warning, or an error
# under fieldValidation=Strict).
_COMMON = {"apiVersion", "kind", "metadata"}
KNOWN_TOP_LEVEL = {
    "ConfigMap": _COMMON | {"data", "binaryData", "immutable"},
    "Secret": _COMMON | {"data", "stringData", "type", "immutable"},
    "ServiceAccount": _COMMON | {"secrets", "imagePullSecrets", "automountServiceAccountToken"},
    "Namespace": _COMMON | {"spec", "status"},
    "Role": _COMMON | {"rules"},
    "ClusterRole": _COMMON | {"rules", "aggregationRule"},
    "RoleBinding": _COMMON | {"subjects", "roleRef"},
    "ClusterRoleBinding": _COMMON | {"subjects", "roleRef"},
    "Endpoints": _COMMON | {"subsets"},
    "Event": None,
}
