"""Alert delivery: a persistent outbox in the signals' database, destinations (Apprise
URLs and a signed JSON webhook) and a delivery worker that never loses an alert.

Wiring (see docs/ALERTS.md, "Delivery")::

    outbox = Outbox(settings.db, [d.name for d in destinations])
    delivery = DeliveryWorker(outbox, destinations)
    delivery.start()
    alerts = SinkWorker("alerts", delivery.sink(), retry=True)  # step.alerts go here
    ...
    alerts.close(); delivery.stop(); outbox.close()
"""

from spikewatch.alerting.destinations import Destination, check_destinations
from spikewatch.alerting.messages import Message, WebhookPayload, signature, verify
from spikewatch.alerting.outbox import Outbox, OutboxSchemaTooNew
from spikewatch.alerting.senders import (
    AppriseSender,
    Sender,
    SendResult,
    WebhookSender,
    build_sender,
)
from spikewatch.alerting.worker import (
    DeliveryStats,
    DeliveryWorker,
    DestinationStats,
    OutboxSink,
)

__all__ = [
    "AppriseSender",
    "DeliveryStats",
    "DeliveryWorker",
    "Destination",
    "DestinationStats",
    "Message",
    "Outbox",
    "OutboxSchemaTooNew",
    "OutboxSink",
    "SendResult",
    "Sender",
    "WebhookPayload",
    "WebhookSender",
    "build_sender",
    "check_destinations",
    "signature",
    "verify",
]
