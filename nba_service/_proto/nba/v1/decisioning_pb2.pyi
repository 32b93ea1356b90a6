import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Channel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANNEL_UNSPECIFIED: _ClassVar[Channel]
    WEB: _ClassVar[Channel]
    MOBILE_APP: _ClassVar[Channel]
    CALL_CENTRE: _ClassVar[Channel]
    CHAT: _ClassVar[Channel]
    EMAIL: _ClassVar[Channel]
    BRANCH: _ClassVar[Channel]
    SMS: _ClassVar[Channel]
    ATM: _ClassVar[Channel]

class ActionType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_TYPE_UNSPECIFIED: _ClassVar[ActionType]
    OFFER: _ClassVar[ActionType]
    SERVICE: _ClassVar[ActionType]
    RETENTION: _ClassVar[ActionType]
    CHAT_INVITE: _ClassVar[ActionType]
    INFO: _ClassVar[ActionType]

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    IMPRESSION: _ClassVar[Outcome]
    CLICK: _ClassVar[Outcome]
    ACCEPT: _ClassVar[Outcome]
    REJECT: _ClassVar[Outcome]
    CONVERSION: _ClassVar[Outcome]
    DISMISS: _ClassVar[Outcome]
CHANNEL_UNSPECIFIED: Channel
WEB: Channel
MOBILE_APP: Channel
CALL_CENTRE: Channel
CHAT: Channel
EMAIL: Channel
BRANCH: Channel
SMS: Channel
ATM: Channel
ACTION_TYPE_UNSPECIFIED: ActionType
OFFER: ActionType
SERVICE: ActionType
RETENTION: ActionType
CHAT_INVITE: ActionType
INFO: ActionType
OUTCOME_UNSPECIFIED: Outcome
IMPRESSION: Outcome
CLICK: Outcome
ACCEPT: Outcome
REJECT: Outcome
CONVERSION: Outcome
DISMISS: Outcome

class Value(_message.Message):
    __slots__ = ("string_value", "number_value", "bool_value", "int_value")
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    NUMBER_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    string_value: str
    number_value: float
    bool_value: bool
    int_value: int
    def __init__(self, string_value: _Optional[str] = ..., number_value: _Optional[float] = ..., bool_value: _Optional[bool] = ..., int_value: _Optional[int] = ...) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("customer_id", "channel", "placement", "context", "limit", "request_id", "explain")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    channel: Channel
    placement: str
    context: _containers.MessageMap[str, Value]
    limit: int
    request_id: str
    explain: bool
    def __init__(self, customer_id: _Optional[str] = ..., channel: _Optional[_Union[Channel, str]] = ..., placement: _Optional[str] = ..., context: _Optional[_Mapping[str, Value]] = ..., limit: _Optional[int] = ..., request_id: _Optional[str] = ..., explain: _Optional[bool] = ...) -> None: ...

class Treatment(_message.Message):
    __slots__ = ("title", "text", "call_to_action", "url")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CALL_TO_ACTION_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    title: str
    text: str
    call_to_action: str
    url: str
    def __init__(self, title: _Optional[str] = ..., text: _Optional[str] = ..., call_to_action: _Optional[str] = ..., url: _Optional[str] = ...) -> None: ...

class Recommendation(_message.Message):
    __slots__ = ("action_id", "action_type", "rank", "priority", "propensity", "value", "context_weight", "lever", "treatment", "reason_codes", "selection_probability", "group")
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_TYPE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    LEVER_FIELD_NUMBER: _ClassVar[int]
    TREATMENT_FIELD_NUMBER: _ClassVar[int]
    REASON_CODES_FIELD_NUMBER: _ClassVar[int]
    SELECTION_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    action_id: str
    action_type: ActionType
    rank: int
    priority: float
    propensity: float
    value: float
    context_weight: float
    lever: float
    treatment: Treatment
    reason_codes: _containers.RepeatedScalarFieldContainer[str]
    selection_probability: float
    group: str
    def __init__(self, action_id: _Optional[str] = ..., action_type: _Optional[_Union[ActionType, str]] = ..., rank: _Optional[int] = ..., priority: _Optional[float] = ..., propensity: _Optional[float] = ..., value: _Optional[float] = ..., context_weight: _Optional[float] = ..., lever: _Optional[float] = ..., treatment: _Optional[_Union[Treatment, _Mapping]] = ..., reason_codes: _Optional[_Iterable[str]] = ..., selection_probability: _Optional[float] = ..., group: _Optional[str] = ...) -> None: ...

class CandidateExplanation(_message.Message):
    __slots__ = ("action_id", "removed_by", "detail", "propensity", "context_weight", "value", "lever", "priority", "rank")
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    REMOVED_BY_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LEVER_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    action_id: str
    removed_by: str
    detail: str
    propensity: float
    context_weight: float
    value: float
    lever: float
    priority: float
    rank: int
    def __init__(self, action_id: _Optional[str] = ..., removed_by: _Optional[str] = ..., detail: _Optional[str] = ..., propensity: _Optional[float] = ..., context_weight: _Optional[float] = ..., value: _Optional[float] = ..., lever: _Optional[float] = ..., priority: _Optional[float] = ..., rank: _Optional[int] = ...) -> None: ...

class FeatureContribution(_message.Message):
    __slots__ = ("feature", "contribution")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    feature: str
    contribution: float
    def __init__(self, feature: _Optional[str] = ..., contribution: _Optional[float] = ...) -> None: ...

class ActionContributions(_message.Message):
    __slots__ = ("action_id", "top")
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    action_id: str
    top: _containers.RepeatedCompositeFieldContainer[FeatureContribution]
    def __init__(self, action_id: _Optional[str] = ..., top: _Optional[_Iterable[_Union[FeatureContribution, _Mapping]]] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("candidates", "contributions")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[CandidateExplanation]
    contributions: _containers.RepeatedCompositeFieldContainer[ActionContributions]
    def __init__(self, candidates: _Optional[_Iterable[_Union[CandidateExplanation, _Mapping]]] = ..., contributions: _Optional[_Iterable[_Union[ActionContributions, _Mapping]]] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("total_us", "store_us", "encode_us", "score_us", "rules_us", "serialize_us")
    TOTAL_US_FIELD_NUMBER: _ClassVar[int]
    STORE_US_FIELD_NUMBER: _ClassVar[int]
    ENCODE_US_FIELD_NUMBER: _ClassVar[int]
    SCORE_US_FIELD_NUMBER: _ClassVar[int]
    RULES_US_FIELD_NUMBER: _ClassVar[int]
    SERIALIZE_US_FIELD_NUMBER: _ClassVar[int]
    total_us: int
    store_us: int
    encode_us: int
    score_us: int
    rules_us: int
    serialize_us: int
    def __init__(self, total_us: _Optional[int] = ..., store_us: _Optional[int] = ..., encode_us: _Optional[int] = ..., score_us: _Optional[int] = ..., rules_us: _Optional[int] = ..., serialize_us: _Optional[int] = ...) -> None: ...

class DecideResponse(_message.Message):
    __slots__ = ("decision_id", "recommendations", "model_version", "catalog_version", "degraded", "degraded_reasons", "timing", "request_id", "explanation")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CATALOG_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_REASONS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    recommendations: _containers.RepeatedCompositeFieldContainer[Recommendation]
    model_version: str
    catalog_version: str
    degraded: bool
    degraded_reasons: _containers.RepeatedScalarFieldContainer[str]
    timing: Timing
    request_id: str
    explanation: Explanation
    def __init__(self, decision_id: _Optional[str] = ..., recommendations: _Optional[_Iterable[_Union[Recommendation, _Mapping]]] = ..., model_version: _Optional[str] = ..., catalog_version: _Optional[str] = ..., degraded: _Optional[bool] = ..., degraded_reasons: _Optional[_Iterable[str]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ..., request_id: _Optional[str] = ..., explanation: _Optional[_Union[Explanation, _Mapping]] = ...) -> None: ...

class RecordOutcomeRequest(_message.Message):
    __slots__ = ("decision_id", "action_id", "customer_id", "outcome", "event_id", "value", "timestamp", "channel")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    action_id: str
    customer_id: str
    outcome: Outcome
    event_id: str
    value: float
    timestamp: _timestamp_pb2.Timestamp
    channel: Channel
    def __init__(self, decision_id: _Optional[str] = ..., action_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., event_id: _Optional[str] = ..., value: _Optional[float] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., channel: _Optional[_Union[Channel, str]] = ...) -> None: ...

class RecordOutcomeResponse(_message.Message):
    __slots__ = ("applied",)
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    def __init__(self, applied: _Optional[bool] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("feature", "value", "op")
    class Op(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OP_UNSPECIFIED: _ClassVar[Event.Op]
        SET: _ClassVar[Event.Op]
        ADD: _ClassVar[Event.Op]
        MAX: _ClassVar[Event.Op]
    OP_UNSPECIFIED: Event.Op
    SET: Event.Op
    ADD: Event.Op
    MAX: Event.Op
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    feature: str
    value: Value
    op: Event.Op
    def __init__(self, feature: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ..., op: _Optional[_Union[Event.Op, str]] = ...) -> None: ...

class IngestEventsRequest(_message.Message):
    __slots__ = ("customer_id", "events", "timestamp")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    events: _containers.RepeatedCompositeFieldContainer[Event]
    timestamp: _timestamp_pb2.Timestamp
    def __init__(self, customer_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class IngestEventsResponse(_message.Message):
    __slots__ = ("applied",)
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    applied: int
    def __init__(self, applied: _Optional[int] = ...) -> None: ...

class ChatTriggerRequest(_message.Message):
    __slots__ = ("session_id", "customer_id", "page_type", "dwell_time_s", "pages_in_session", "cart_value", "errors_seen", "returning_visitor", "context", "request_id", "timestamp")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    DWELL_TIME_S_FIELD_NUMBER: _ClassVar[int]
    PAGES_IN_SESSION_FIELD_NUMBER: _ClassVar[int]
    CART_VALUE_FIELD_NUMBER: _ClassVar[int]
    ERRORS_SEEN_FIELD_NUMBER: _ClassVar[int]
    RETURNING_VISITOR_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    customer_id: str
    page_type: str
    dwell_time_s: float
    pages_in_session: int
    cart_value: float
    errors_seen: int
    returning_visitor: bool
    context: _containers.MessageMap[str, Value]
    request_id: str
    timestamp: _timestamp_pb2.Timestamp
    def __init__(self, session_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., page_type: _Optional[str] = ..., dwell_time_s: _Optional[float] = ..., pages_in_session: _Optional[int] = ..., cart_value: _Optional[float] = ..., errors_seen: _Optional[int] = ..., returning_visitor: _Optional[bool] = ..., context: _Optional[_Mapping[str, Value]] = ..., request_id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ChatTriggerResponse(_message.Message):
    __slots__ = ("show_invite", "kind", "queue", "action_id", "invite_id", "score", "propensity", "value", "reason_codes", "offer_callback", "treatment", "degraded", "degraded_reasons", "decision_id")
    SHOW_INVITE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    INVITE_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REASON_CODES_FIELD_NUMBER: _ClassVar[int]
    OFFER_CALLBACK_FIELD_NUMBER: _ClassVar[int]
    TREATMENT_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_REASONS_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    show_invite: bool
    kind: str
    queue: str
    action_id: str
    invite_id: str
    score: float
    propensity: float
    value: float
    reason_codes: _containers.RepeatedScalarFieldContainer[str]
    offer_callback: bool
    treatment: Treatment
    degraded: bool
    degraded_reasons: _containers.RepeatedScalarFieldContainer[str]
    decision_id: str
    def __init__(self, show_invite: _Optional[bool] = ..., kind: _Optional[str] = ..., queue: _Optional[str] = ..., action_id: _Optional[str] = ..., invite_id: _Optional[str] = ..., score: _Optional[float] = ..., propensity: _Optional[float] = ..., value: _Optional[float] = ..., reason_codes: _Optional[_Iterable[str]] = ..., offer_callback: _Optional[bool] = ..., treatment: _Optional[_Union[Treatment, _Mapping]] = ..., degraded: _Optional[bool] = ..., degraded_reasons: _Optional[_Iterable[str]] = ..., decision_id: _Optional[str] = ...) -> None: ...

class AgentCapacityRequest(_message.Message):
    __slots__ = ("queue", "agents_available", "agents_busy")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    AGENTS_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    AGENTS_BUSY_FIELD_NUMBER: _ClassVar[int]
    queue: str
    agents_available: int
    agents_busy: int
    def __init__(self, queue: _Optional[str] = ..., agents_available: _Optional[int] = ..., agents_busy: _Optional[int] = ...) -> None: ...

class AgentCapacityResponse(_message.Message):
    __slots__ = ("queue", "free_capacity")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    FREE_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    queue: str
    free_capacity: int
    def __init__(self, queue: _Optional[str] = ..., free_capacity: _Optional[int] = ...) -> None: ...

class ReloadModelRequest(_message.Message):
    __slots__ = ("slot",)
    SLOT_FIELD_NUMBER: _ClassVar[int]
    slot: str
    def __init__(self, slot: _Optional[str] = ...) -> None: ...

class ReloadCatalogRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("changed", "version", "previous_version", "error")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    version: str
    previous_version: str
    error: str
    def __init__(self, changed: _Optional[bool] = ..., version: _Optional[str] = ..., previous_version: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("ready", "model_version", "challenger_version", "catalog_version", "details")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    READY_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_VERSION_FIELD_NUMBER: _ClassVar[int]
    CATALOG_VERSION_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    model_version: str
    challenger_version: str
    catalog_version: str
    details: _containers.ScalarMap[str, str]
    def __init__(self, ready: _Optional[bool] = ..., model_version: _Optional[str] = ..., challenger_version: _Optional[str] = ..., catalog_version: _Optional[str] = ..., details: _Optional[_Mapping[str, str]] = ...) -> None: ...

class InspectRequest(_message.Message):
    __slots__ = ("customer_id", "channel", "placement", "context")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    channel: Channel
    placement: str
    context: _containers.MessageMap[str, Value]
    def __init__(self, customer_id: _Optional[str] = ..., channel: _Optional[_Union[Channel, str]] = ..., placement: _Optional[str] = ..., context: _Optional[_Mapping[str, Value]] = ...) -> None: ...

class FeatureValue(_message.Message):
    __slots__ = ("name", "source", "value", "missing", "stale", "age_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    AGE_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    source: str
    value: str
    missing: bool
    stale: bool
    age_s: float
    def __init__(self, name: _Optional[str] = ..., source: _Optional[str] = ..., value: _Optional[str] = ..., missing: _Optional[bool] = ..., stale: _Optional[bool] = ..., age_s: _Optional[float] = ...) -> None: ...

class ContactRecord(_message.Message):
    __slots__ = ("action_id", "outcome", "count", "last_ms", "channel")
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_MS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    action_id: str
    outcome: str
    count: int
    last_ms: int
    channel: str
    def __init__(self, action_id: _Optional[str] = ..., outcome: _Optional[str] = ..., count: _Optional[int] = ..., last_ms: _Optional[int] = ..., channel: _Optional[str] = ...) -> None: ...

class InspectResponse(_message.Message):
    __slots__ = ("decision", "features", "history")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    decision: DecideResponse
    features: _containers.RepeatedCompositeFieldContainer[FeatureValue]
    history: _containers.RepeatedCompositeFieldContainer[ContactRecord]
    def __init__(self, decision: _Optional[_Union[DecideResponse, _Mapping]] = ..., features: _Optional[_Iterable[_Union[FeatureValue, _Mapping]]] = ..., history: _Optional[_Iterable[_Union[ContactRecord, _Mapping]]] = ...) -> None: ...

class EchoRequest(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class EchoResponse(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...
