"""Per-site Celery workers (issue 18, the distributed-execution half).

The controller keeps everything it does today (assessment, planning, rollout rules, the audit
journal, reports); only each agent request travels: `BrokerSession.run(ops)` becomes one Celery
task on the host's site queue carrying the host name, check mode and the agent request document,
never a credential. A `kbfix worker` near the hosts resolves the endpoint and credentials from its
own inventory, keyring or environment, opens a real `remoting.session.AgentSession` and answers.

Modules: `app` (the Celery app, queues and task options), `signing` (X.509 message signing),
`wire` (what a task carries and answers), `worker` (the worker side), `dispatch` (the
controller side: `BrokerSession`, `BrokerEngine`), `watch` (is the broker up; has it been lost
since?), `replies` (the controller's reply queue on RabbitMQ), `redis_transport` (kombu's Redis
transport that survives an outage), `cli` (`kbfix worker`).
"""

from __future__ import annotations
