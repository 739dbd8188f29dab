"""The metadata-only catalogue: what the data is, without the data — for sharing and trading through
an innovation data centre, where data are published only after a contract, so until then only
their description is.

- :mod:`~mos_agent.catalog.identity`: one dataset per device, named by its ISA-95 asset path;
- :mod:`~mos_agent.catalog.jsonld`: the DCAT 3 catalogue as JSON-LD (``build_catalog``);
- :mod:`~mos_agent.catalog.observe`: what a store holds per dataset (``observe_store``).
"""

from mos_agent.catalog.identity import dataset_identifier
from mos_agent.catalog.jsonld import build_catalog
from mos_agent.catalog.observe import Observation, StoreUnavailable, observe_store

__all__ = ["Observation", "StoreUnavailable", "build_catalog", "dataset_identifier", "observe_store"]
