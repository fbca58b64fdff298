"""zh-CN notification templates and the channels that deliver outbox rows.

Templates are keyed by a stable English code; the workflow emits the code and ``str``
params, the outbox keeps the rendered text. Params used (all already formatted):

- ``application_id``: the opaque application id.
- ``round``: submission round, e.g. ``"2"``.
- ``deadline``: an instant in +08:00, e.g. ``"2024-08-30 18:00"``; for
  ``defense.scheduled`` the defense's start time.
- ``amount``: a plain number of yuan, e.g. ``"700"`` (the template adds 元).
- ``reason``: zh-CN reason given by the reviewer, committee or ops.
- ``time_left``: e.g. ``"3 天"``.
- ``place``: where the defense takes place.
"""

from __future__ import annotations

import logging
import string
from typing import Protocol

from models.tables import NotificationOutbox

logger = logging.getLogger(__name__)

_CONTACT = "如有疑问，请联系评审委员会办公室。"

TEMPLATES: dict[str, str] = {
    "state.draft": (
        "您的职称申报（编号 {application_id}）已创建。请在 {deadline} 前完成材料填报"
        "并提交评审委员会，逾期未提交视为放弃本年度申报。"
    ),
    "state.under_review": (
        "您的申报材料（编号 {application_id}）已提交评审委员会，这是第 {round} 次提交，"
        "正在审核中。审核结果将及时通知您，请保持联系方式畅通。"
    ),
    "state.returned": (
        "您的申报材料（编号 {application_id}）需要修改后重新提交，退回原因：{reason}。"
        "请在 {deadline} 前修改并重新提交；逾期未提交将不予受理。"
    ),
    "state.accepted": (
        "您的申报材料（编号 {application_id}）已通过审核，评审委员会已接收材料。"
        "接下来请留意评审费缴纳通知。"
    ),
    "state.fee_due": (
        "您的申报（编号 {application_id}）需缴纳评审费 {amount} 元，"
        "请在 {deadline} 前完成缴费；逾期未缴费，本次申报将失效。"
    ),
    "state.paid": (
        "已收到您缴纳的评审费 {amount} 元（申报编号 {application_id}），谢谢。"
        "答辩或评审会的安排将另行通知。"
    ),
    "state.defense_pending": (
        "您的申报（编号 {application_id}）需参加专业水平答辩。"
        "答辩时间和地点确定后将另行通知，请提前做好准备。"
    ),
    "state.awaiting_meeting": (
        "您的申报（编号 {application_id}）已进入评审会环节，请耐心等待评审会召开，"
        "评审结果将及时通知您。"
    ),
    "state.in_meeting": (
        "评审会正在审议您的申报（编号 {application_id}），结果产生后将及时通知您。"
    ),
    "state.publicity": (
        "您的申报（编号 {application_id}）已通过评审会评审，现进入公示期，"
        "公示截止时间为 {deadline}。公示期满无异议后，评审结果生效。"
    ),
    "state.under_investigation": (
        "您的申报（编号 {application_id}）在公示期间收到异议，现依规进行核查，"
        "核查期间评审结果暂缓生效。如需您补充说明，我们会及时与您联系。"
    ),
    "state.approved": (
        "恭喜您！您的申报（编号 {application_id}）公示期满，评审通过，评审结果正式生效。"
    ),
    "state.not_approved": (
        "很遗憾，您的申报（编号 {application_id}）本次未获通过，原因：{reason}。"
        "感谢您的参与，欢迎在今后的评审年度继续申报。"
    ),
    "state.abandoned": (
        "您的申报（编号 {application_id}）在截止时间 {deadline} 前未提交评审委员会，"
        "按规定视为放弃本年度申报。" + _CONTACT
    ),
    "state.rejected": ("您的申报（编号 {application_id}）不予受理，原因：{reason}。" + _CONTACT),
    "state.lapsed": (
        "您的申报（编号 {application_id}）未在 {deadline} 前缴纳评审费，本次申报已失效。" + _CONTACT
    ),
    "state.withdrawn": (
        "您已撤回申报（编号 {application_id}）。如需再次申报，请留意今后年度的评审通知。"
    ),
    "state.disqualified": (
        "经核查，您的申报（编号 {application_id}）被取消评审资格，原因：{reason}。" + _CONTACT
    ),
    "reminder.submission_cutoff": (
        "温馨提醒：您的申报（编号 {application_id}）尚未提交评审委员会，"
        "距首次提交截止时间 {deadline} 还有 {time_left}。"
        "请尽快完成填报并提交，逾期未提交视为放弃本年度申报。"
    ),
    "reminder.fee_deadline": (
        "温馨提醒：您的申报（编号 {application_id}）尚需缴纳评审费 {amount} 元，"
        "缴费截止时间为 {deadline}，还有 {time_left}。请尽快缴费，逾期未缴费本次申报将失效。"
    ),
    "defense.scheduled": (
        "您的专业水平答辩已安排（申报编号 {application_id}）：时间 {deadline}，地点 {place}。"
        "请提前做好准备，准时参加。"
    ),
}
"""Template code → zh-CN text with ``{param}`` placeholders."""


class UnknownTemplateError(LookupError):
    """A template code the workflow should never emit: a programming error, not retryable."""


class _MissingParams(dict[str, str]):
    """Fills a missing param with a visible marker instead of failing the send."""

    def __missing__(self, key: str) -> str:
        logger.warning("notification param %r missing; rendered a placeholder", key)
        return f"（{key}未提供）"


def render(template: str, params: dict[str, str]) -> str:
    """Render a template; a missing param is marked, an unknown code raises."""
    try:
        text = TEMPLATES[template]
    except KeyError:
        raise UnknownTemplateError(f"unknown notification template {template!r}") from None
    return string.Formatter().vformat(text, (), _MissingParams(params))


class DeliveryChannel(Protocol):
    """Where an outbox row goes once written (SMS gateway, platform API, log…)."""

    async def deliver(self, row: NotificationOutbox) -> None: ...


class LogChannel:
    """Writes one log line per message: ids and template only, never the body or a name."""

    def __init__(self, log: logging.Logger | None = None) -> None:
        self._log = log or logger

    async def deliver(self, row: NotificationOutbox) -> None:
        self._log.info(
            "notification key=%s application=%s recipient=%s template=%s",
            row.key,
            row.application_id,
            row.recipient,
            row.template,
        )


class NullChannel:
    """Delivers nowhere: the outbox row is the only record (tests, dry runs)."""

    async def deliver(self, row: NotificationOutbox) -> None:
        return None


def channel_from_name(name: str) -> DeliveryChannel:
    """The channel for ``settings.notification_channel`` (``log`` or ``none``)."""
    channels: dict[str, type[LogChannel] | type[NullChannel]] = {
        "log": LogChannel,
        "none": NullChannel,
    }
    try:
        return channels[name.strip().lower()]()
    except KeyError:
        raise ValueError(
            f"unknown notification channel {name!r}; expected one of {sorted(channels)}"
        ) from None


__all__ = [
    "TEMPLATES",
    "DeliveryChannel",
    "LogChannel",
    "NullChannel",
    "UnknownTemplateError",
    "channel_from_name",
    "render",
]
