"""Input and output serializers of the API. Input serializers check shapes and types only;
every rule about content (sizes, caps, runtimes, file names) is the services' to enforce.

Output redaction: a non-staff reader never sees a hidden test case's input or expected
output, nor what the program printed for it (that would leak the expected answer); the
``redacted`` flag says when something was left out. A compile step's output is the
compiler's, about the submitted code alone, and is never redacted.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from executions.models import Comparison, SelfTestStatus, Status, Verdict

# Inputs ------------------------------------------------------------------------------------


def _text(**kwargs: Any) -> serializers.CharField:
    return serializers.CharField(trim_whitespace=False, allow_blank=True, **kwargs)


class FileInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    content = _text()


class TestCaseInputSerializer(serializers.Serializer):
    name = _text(required=False, max_length=100)
    stdin = _text(required=False)
    expected_output = _text(required=False)
    comparison = serializers.ChoiceField(choices=Comparison.choices, required=False)
    tolerance = serializers.FloatField(required=False, min_value=0)
    weight = serializers.IntegerField(required=False, min_value=1, max_value=1000)
    hidden = serializers.BooleanField(required=False)


class LimitsInputSerializer(serializers.Serializer):
    time_limit_ms = serializers.IntegerField(required=False, min_value=1, max_value=10**9)
    memory_mb = serializers.IntegerField(required=False, min_value=1, max_value=10**9)
    output_kb = serializers.IntegerField(required=False, min_value=1, max_value=10**9)


class SubmitInputSerializer(serializers.Serializer):
    runtime = serializers.CharField(max_length=64, help_text="A runtime name from /runtimes/.")
    source = _text(required=False, help_text="The main file's content; or give `files`.")  # type: ignore[assignment]
    files = FileInputSerializer(many=True, required=False, help_text="Several files.")
    stdin = _text(required=False, default="")
    test_cases = TestCaseInputSerializer(many=True, required=False, default=list)
    limits = LimitsInputSerializer(required=False, default=dict)
    title = _text(required=False, default="", max_length=200)
    callback_url = _text(
        required=False,
        default="",
        max_length=2000,
        help_text="http(s) URL that receives a signed POST whenever an execution ends. A host "
        "that is an IP address (in any spelling) must be public: loopback, private, "
        "link-local, metadata, reserved, unspecified and multicast addresses, IPv4-mapped "
        "ones included, are refused with 400 unless an admin allow-listed them "
        "(EXECUTION_WEBHOOK_ALLOWLIST). A host name's addresses are checked at each delivery, "
        "which is refused if any of them is such an address.",
    )

    def to_service_kwargs(self) -> dict[str, Any]:
        return submit_kwargs(self.validated_data)


def submit_kwargs(validated: dict[str, Any]) -> dict[str, Any]:
    """Validated submission data as keyword arguments of ``services.evaluation_submit``."""
    data = dict(validated)
    limits = data.pop("limits", None) or {}
    return {**data, **limits}


class BatchInputSerializer(serializers.Serializer):
    items = serializers.ListField(
        child=SubmitInputSerializer(), min_length=1, help_text="Submissions, all stored or none."
    )


class RerunInputSerializer(serializers.Serializer):
    backend = serializers.CharField(
        required=False, allow_blank=True, max_length=200, help_text="Staff only."
    )


class EvaluationFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Status.choices, required=False)
    verdict = serializers.ChoiceField(choices=Verdict.choices, required=False)
    # The pattern tells clients what CharField enforces anyway: no NUL characters.
    runtime = serializers.RegexField(r"^[^\x00]*$", required=False, max_length=64)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
    ordering = serializers.ChoiceField(
        choices=["created_at", "-created_at", "id", "-id"], required=False
    )


class WaitSerializer(serializers.Serializer):
    wait = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=3600,
        help_text="Hold the request up to this many seconds (capped by the server) "
        "until the execution ends.",
    )


# Outputs -----------------------------------------------------------------------------------


class LimitRangeSerializer(serializers.Serializer):
    default = serializers.IntegerField()
    max = serializers.IntegerField()


class CompileLimitsSerializer(serializers.Serializer):
    time_limit_ms = serializers.IntegerField()
    memory_mb = serializers.IntegerField()


class SelfTestSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=SelfTestStatus.choices)
    detail = serializers.CharField()
    tested_at = serializers.DateTimeField(allow_null=True)


class RuntimeOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    display_name = serializers.CharField()
    language = serializers.CharField(help_text="The language, as the picker groups runtimes.")
    version = serializers.CharField()
    editor_mode = serializers.CharField(help_text="A CodeMirror mode (MIME type); empty: plain.")
    file_name = serializers.CharField()
    network_enabled = serializers.BooleanField()
    offered = serializers.BooleanField(
        help_text="Takes submissions: false when the runtime failed its self-test."
    )
    compiles = serializers.BooleanField(help_text="Each execution starts with a compile step.")
    compile_limits = serializers.SerializerMethodField(
        help_text="The compile step's own limits; null when the runtime does not compile."
    )
    time_limit_ms = serializers.SerializerMethodField()
    memory_mb = serializers.SerializerMethodField()
    output_kb = serializers.SerializerMethodField()
    self_test = serializers.SerializerMethodField()

    @extend_schema_field(CompileLimitsSerializer(allow_null=True))
    def get_compile_limits(self, obj: Any) -> dict[str, int] | None:
        if not obj.compiles:
            return None
        return {"time_limit_ms": obj.compile_time_limit_ms, "memory_mb": obj.compile_memory_mb}

    @extend_schema_field(SelfTestSerializer)
    def get_self_test(self, obj: Any) -> dict[str, Any]:
        return {
            "status": obj.self_test_status,
            "detail": obj.self_test_detail,
            "tested_at": serializers.DateTimeField().to_representation(obj.self_tested_at)
            if obj.self_tested_at
            else None,
        }

    def _range(self, default: int, maximum: int) -> dict[str, int]:
        return {"default": default, "max": maximum}

    @extend_schema_field(LimitRangeSerializer)
    def get_time_limit_ms(self, obj: Any) -> dict[str, int]:
        return self._range(obj.default_time_limit_ms, obj.max_time_limit_ms)

    @extend_schema_field(LimitRangeSerializer)
    def get_memory_mb(self, obj: Any) -> dict[str, int]:
        return self._range(obj.default_memory_mb, obj.max_memory_mb)

    @extend_schema_field(LimitRangeSerializer)
    def get_output_kb(self, obj: Any) -> dict[str, int]:
        return self._range(obj.default_output_kb, obj.max_output_kb)


class OutcomeOutputSerializer(serializers.Serializer):
    """Program output as text (invalid UTF-8 replaced, NUL shown as ␀), null when hidden."""

    verdict = serializers.CharField()
    exit_code = serializers.IntegerField(allow_null=True)
    signal = serializers.IntegerField(allow_null=True)
    stdout = serializers.CharField(source="stdout_text", allow_null=True)
    stderr = serializers.CharField(source="stderr_text", allow_null=True)
    stdout_truncated = serializers.BooleanField()
    stderr_truncated = serializers.BooleanField()
    wall_time_ms = serializers.IntegerField(allow_null=True)
    peak_memory_kb = serializers.IntegerField(allow_null=True)
    redacted = serializers.SerializerMethodField()

    def _redact(self, obj: Any) -> bool:
        raise NotImplementedError

    @extend_schema_field(serializers.BooleanField())
    def get_redacted(self, obj: Any) -> bool:
        return self._redact(obj)

    def to_representation(self, instance: Any) -> dict[str, Any]:
        data = super().to_representation(instance)
        if data["redacted"]:
            data["stdout"] = data["stderr"] = None
        return data


class TestResultOutputSerializer(OutcomeOutputSerializer):
    test_case = serializers.IntegerField(source="test_case.position")
    name = serializers.CharField(source="test_case.name")
    hidden = serializers.BooleanField(source="test_case.hidden")

    def _redact(self, obj: Any) -> bool:
        return obj.test_case.hidden and not self.context.get("show_hidden", False)


class CompileOutputSerializer(serializers.Serializer):
    """How an execution's compile step ended. ``output`` is its stdout then its stderr, as
    text (invalid UTF-8 replaced, NUL shown as ␀)."""

    status = serializers.CharField(
        source="compile_status",
        help_text="compiled, or why not: failed (the compiler's exit code or signal), "
        "time_limit, memory_limit, output_limit.",
    )
    exit_code = serializers.IntegerField(source="compile_exit_code", allow_null=True)
    signal = serializers.IntegerField(source="compile_signal", allow_null=True)
    output = serializers.CharField(source="compile_output_text")
    output_truncated = serializers.BooleanField(source="compile_output_truncated")
    time_ms = serializers.IntegerField(source="compile_time_ms", allow_null=True)


class ExecutionOutputSerializer(OutcomeOutputSerializer):
    """The execution's own output is the deciding run's: the first failing test case (or the
    last), which may be a hidden one, so it is redacted whenever hidden cases are. ``compile``
    is the compile step's, shown to every reader."""

    id = serializers.IntegerField()
    attempt = serializers.IntegerField()
    status = serializers.CharField()
    score = serializers.DecimalField(max_digits=6, decimal_places=2, allow_null=True)
    backend = serializers.CharField()
    queued_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    error_kind = serializers.CharField()
    error_message = serializers.CharField()
    retry_of = serializers.IntegerField(
        source="retry_of_id",
        allow_null=True,
        help_text="The execution this one runs again automatically, because the "
        "infrastructure interrupted it (error_kind says how); null for an attempt someone "
        "asked for.",
    )
    compile = serializers.SerializerMethodField(
        help_text="The compile step; null when the runtime does not compile or the step has "
        "not ended (or the infrastructure failed during it)."
    )
    results = TestResultOutputSerializer(many=True)

    def _redact(self, obj: Any) -> bool:
        return bool(self.context.get("has_hidden")) and not self.context.get("show_hidden")

    @extend_schema_field(CompileOutputSerializer(allow_null=True))
    def get_compile(self, obj: Any) -> dict[str, Any] | None:
        if not obj.compile_status:
            return None
        return CompileOutputSerializer(obj).data


class TestCaseOutputSerializer(serializers.Serializer):
    position = serializers.IntegerField()
    name = serializers.CharField()
    hidden = serializers.BooleanField()
    comparison = serializers.CharField()
    tolerance = serializers.FloatField()
    weight = serializers.IntegerField()
    stdin = serializers.CharField(allow_null=True, help_text="Null for hidden cases.")
    expected_output = serializers.CharField(allow_null=True, help_text="Null for hidden cases.")

    def to_representation(self, instance: Any) -> dict[str, Any]:
        data = super().to_representation(instance)
        if instance.hidden and not self.context.get("show_hidden", False):
            data["stdin"] = data["expected_output"] = None
        return data


class FileOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    content = serializers.CharField()


class EvaluationSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    runtime = serializers.CharField(source="runtime.name")
    owner = serializers.CharField(source="owner.username")
    status = serializers.CharField(source="latest_status", allow_null=True)
    verdict = serializers.CharField(source="latest_verdict", allow_null=True)
    score = serializers.DecimalField(
        source="latest_score", max_digits=6, decimal_places=2, allow_null=True
    )
    attempts = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class EvaluationPageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = EvaluationSummarySerializer(many=True)


class EvaluationDetailSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    runtime = serializers.CharField(source="runtime.name")
    owner = serializers.CharField(source="owner.username")
    files = FileOutputSerializer(many=True)
    stdin = serializers.CharField()
    time_limit_ms = serializers.IntegerField()
    memory_mb = serializers.IntegerField()
    output_kb = serializers.IntegerField()
    callback_url = serializers.CharField()
    created_at = serializers.DateTimeField()
    test_cases = TestCaseOutputSerializer(many=True)
    executions = ExecutionOutputSerializer(many=True, help_text="Newest attempt first.")

    def to_representation(self, instance: Any) -> dict[str, Any]:
        cases = list(instance.test_cases.all())
        self.context["has_hidden"] = any(case.hidden for case in cases)
        return super().to_representation(instance)


class BatchOutputSerializer(serializers.Serializer):
    items = EvaluationDetailSerializer(many=True)


class CancelOutputSerializer(serializers.Serializer):
    cancelled = serializers.BooleanField(help_text="False when nothing was running.")
    evaluation = EvaluationDetailSerializer()


class BackendHealthSerializer(serializers.Serializer):
    name = serializers.CharField()
    active = serializers.BooleanField()
    ok = serializers.BooleanField(allow_null=True)
    detail = serializers.CharField()
    version = serializers.CharField()
    error = serializers.CharField()


class RuntimeHealthSerializer(serializers.Serializer):
    name = serializers.CharField()
    offered = serializers.BooleanField()
    self_test_status = serializers.ChoiceField(choices=SelfTestStatus.choices)
    self_tested_at = serializers.DateTimeField(allow_null=True)


class BackendsOutputSerializer(serializers.Serializer):
    active = serializers.CharField()
    reason = serializers.CharField()
    backends = BackendHealthSerializer(many=True, required=False, help_text="Staff only.")
    runtimes = RuntimeHealthSerializer(
        many=True,
        required=False,
        help_text="Staff only: each enabled runtime's last self-test.",
    )


class WebhookSecretOutputSerializer(serializers.Serializer):
    secret = serializers.CharField(help_text="Shown once; keep it with your receiver.")


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    fields = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField())
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()
