"""argo-etl-bootstrap tasks. `invoke --list` shows them; each task's code is in etlboot/tasks/<namespace>.py."""

from invoke import Collection

from etlboot.tasks import aws, core, demo, examples, tools

ns = Collection(core.up, core.status, core.down, core.ui, core.render, core.doctor, core.trace)
ns.add_collection(tools.ns)
ns.add_collection(demo.ns)
ns.add_collection(examples.ns)
ns.add_collection(aws.ns)
