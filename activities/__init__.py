"""Every side effect of the workflows: the SQL read model, the audit log, notifications."""

from activities.database import Database
from activities.notifications import DeliveryChannel, channel_from_name, render
from activities.zhiping_activities import ZhipingActivities

__all__ = ["Database", "DeliveryChannel", "ZhipingActivities", "channel_from_name", "render"]
