"""The catalogue as JSON-LD: ``build_catalog`` turns a loaded configuration into a DCAT 3
``dcat:Catalog`` with one ``dcat:Dataset`` per device (see docs/catalog.md for the vocabulary
mapping), optionally with what the store holds per dataset (:mod:`mos_agent.catalog.observe`).

Everything in the output is picked field by field from the configuration (a whitelist); nothing is
copied as a dict, so connection settings, addresses, node ids, topics, credentials and file paths
cannot leak into it even when drivers add fields later.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mos_agent import units
from mos_agent.catalog.identity import dataset_identifier, device_levels
from mos_agent.config.models import CatalogSection
from mos_agent.kpi.figures import KPI_DESCRIPTIONS, KPI_NAMES, KPI_UNITS
from mos_agent.taxonomy import (
    CATEGORIES,
    CATEGORY_DESCRIPTIONS,
    DEFAULT_KIND,
    KPI_CATEGORY,
    RECORD_CATEGORIES,
    asset_path,
)

if TYPE_CHECKING:
    from mos_agent.catalog.observe import Observation
    from mos_agent.config.loader import LoadedConfig
    from mos_agent.config.models import DeviceBase, LocalizedText, TagBase
    from mos_agent.config.profiles import ProfileInfo
    from mos_agent.driver_api import Driver
    from mos_agent.sharing.contracts import Contract

# Project vocabulary. w3id.org gives a permanent, redirectable namespace that does not depend on
# where the project is hosted; the terms are listed in docs/catalog.md.
MOS_NS = "https://w3id.org/mos-agent/ns#"

CONTEXT: dict[str, str] = {
    "dcat": "http://www.w3.org/ns/dcat#",
    "dct": "http://purl.org/dc/terms/",
    "foaf": "http://xmlns.com/foaf/0.1/",
    "vcard": "http://www.w3.org/2006/vcard/ns#",
    "skos": "http://www.w3.org/2004/02/skos/core#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "odrl": "http://www.w3.org/ns/odrl/2/",
    "dqv": "http://www.w3.org/ns/dqv#",
    "mos": MOS_NS,
}

DEFAULT_BASE_URI = "urn:mos-agent:"
CATEGORY_SCHEME = "mos:categories"

# Korean labels make the catalogue searchable in a Korean data centre without a translation step.
CATEGORY_LABELS_KO: dict[str, str] = {
    "process": "공정",
    "quality": "품질",
    "equipment_state": "설비 상태",
    "production": "생산",
    "energy": "에너지",
    "environment": "환경",
    "material": "자재",
    "maintenance": "보전",
    "kpi": "핵심성과지표",
}
STAGE_LABELS_KO: dict[str, str] = {
    "receiving": "입고",
    "machining": "가공",
    "forming": "성형",
    "welding": "용접",
    "assembly": "조립",
    "painting": "도장",
    "inspection": "검사",
    "packing": "포장",
    "shipping": "출하",
    "utility": "유틸리티",
}


@dataclass(frozen=True, slots=True)
class Standard:
    title: str
    uri: str


ISA_95 = Standard(
    "IEC 62264-1:2013 (ISA-95) Enterprise-control system integration — Part 1: Models and terminology",
    "https://webstore.iec.ch/publication/6675",
)

ISO_22400_2 = Standard(
    "ISO 22400-2:2014 Automation systems and integration — Key performance indicators (KPIs) for manufacturing "
    "operations management — Part 2: Definitions and descriptions",
    "https://www.iso.org/standard/54497.html",
)

# Used when a driver class does not declare ``standard`` / ``standard_uri`` itself.
PROTOCOL_STANDARDS: dict[str, Standard] = {
    "opcua": Standard("IEC 62541 OPC Unified Architecture", "https://opcfoundation.org/documents/10000-1/"),
    "modbus": Standard("MODBUS Application Protocol Specification V1.1b3",
                       "https://modbus.org/docs/Modbus_Application_Protocol_V1_1b3.pdf"),
    "mqtt": Standard("ISO/IEC 20922:2016 Message Queuing Telemetry Transport (MQTT) v3.1.1",
                     "https://www.iso.org/standard/69466.html"),
}
PROTOCOL_LABELS: dict[str, str] = {"opcua": "OPC UA", "modbus": "Modbus", "mqtt": "MQTT"}

ACCESS_RIGHTS_EN = ("Metadata only. The data described here are not published: they are available only "
                    "under a contract with the publisher.")
ACCESS_RIGHTS_KO = "메타데이터만 공개합니다. 이 데이터는 공급자와 계약을 체결한 경우에만 제공됩니다."

# Source data types (as drivers name them in ``TagBase.data_type()``) → XML Schema datatypes.
_XSD_TYPES: dict[str, str] = {
    "bool": "xsd:boolean", "boolean": "xsd:boolean",
    "int8": "xsd:byte", "sbyte": "xsd:byte", "uint8": "xsd:unsignedByte", "byte": "xsd:unsignedByte",
    "int16": "xsd:short", "uint16": "xsd:unsignedShort",
    "int32": "xsd:int", "uint32": "xsd:unsignedInt",
    "int64": "xsd:long", "uint64": "xsd:unsignedLong",
    "int": "xsd:long", "integer": "xsd:long",
    "float32": "xsd:float", "float": "xsd:double", "float64": "xsd:double", "double": "xsd:double",
    "number": "xsd:double",
    # enumerations are stored as their text (OPC UA EnumStrings / EnumValues names)
    "string": "xsd:string", "text": "xsd:string", "localizedtext": "xsd:string", "enum": "xsd:string",
    "datetime": "xsd:dateTime",
}

_QUALITY_METRICS: tuple[tuple[str, str], ...] = (
    ("mos:pointCount", "Number of points (readings of any quality) stored in the observation window."),
    ("mos:goodShare", "Share of the stored points with good quality (0 to 1)."),
    ("mos:uncertainShare", "Share of the stored points with uncertain quality (0 to 1)."),
    ("mos:badShare", "Share of the stored points with bad quality: failed reads, timeouts, NaN (0 to 1)."),
)


# ---------------------------------------------------------------- small formatters


def iso_duration(seconds: float) -> str:
    """Seconds → ``xsd:duration`` (ISO 8601), e.g. 0.5 → ``PT0.5S``, 90 → ``PT1M30S``, 86400 → ``P1D``."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a temporal resolution must be a positive number of seconds, got {seconds!r}")
    # Microsecond resolution keeps float noise (0.1 * 3) out of the lexical form.
    micros = round(seconds * 1_000_000)
    days, micros = divmod(micros, 86_400_000_000)
    hours, micros = divmod(micros, 3_600_000_000)
    minutes, micros = divmod(micros, 60_000_000)
    secs = Decimal(micros) / Decimal(1_000_000)
    out = "P" + (f"{days}D" if days else "")
    time_part = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if secs:
        time_part += f"{_plain_decimal(secs)}S"
    if time_part:
        out += "T" + time_part
    return out if out != "P" else "PT0S"


def _plain_decimal(value: Decimal) -> str:
    return format(value.normalize(), "f")


def rfc3339(moment: datetime) -> str:
    """UTC with milliseconds: ``2026-12-01T00:00:00.000Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _datetime_literal(moment: datetime) -> dict[str, str]:
    return {"@value": rfc3339(moment), "@type": "xsd:dateTime"}


def datetime_from_ns(ns: int) -> datetime:
    """Exact to the microsecond (through a float, the last instant of a day could round to the next)."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1000)


def _share(part: int, whole: int) -> dict[str, str]:
    value = Decimal(part) / Decimal(whole)
    text = _plain_decimal(value.quantize(Decimal("0.000001")))
    return {"@value": text if "." in text else f"{text}.0", "@type": "xsd:decimal"}


def _texts(localized: LocalizedText | None, fallback_en: str | None = None) -> list[dict[str, str]]:
    """Language-tagged literals from a ``LocalizedText``; English falls back to a generated text."""
    out: list[dict[str, str]] = []
    en = localized.en if localized and localized.en else fallback_en
    if en:
        out.append({"@value": en, "@language": "en"})
    if localized and localized.ko:
        out.append({"@value": localized.ko, "@language": "ko"})
    return out


def _mtime(path: Path | None) -> datetime | None:
    if path is None:
        return None
    try:
        return datetime.fromtimestamp(Path(path).stat().st_mtime, UTC)
    except OSError:
        return None


def category_iri(category: str) -> str:
    return f"mos:category-{category}"


def xsd_type_for(data_type: str) -> str | None:
    """The XML Schema datatype for a driver's data type name (``float32``, ``string:20``, ``Double``…)."""
    base = data_type.split(":", 1)[0].strip().lower()
    return _XSD_TYPES.get(base)


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="-_.~")


def _base_uri(configured: str | None) -> str:
    if not configured:
        return DEFAULT_BASE_URI
    return configured if configured.endswith(("/", "#", ":")) else configured + "/"


def _standard_node(standard: Standard) -> dict[str, Any]:
    node: dict[str, Any] = {"@type": "dct:Standard", "dct:title": standard.title}
    if standard.uri:
        node["@id"] = standard.uri
    return node


def _profile_node(base: str, name: str) -> dict[str, Any]:
    return {"@id": f"{base}profile/{_quote(name)}", "@type": ["dct:Standard", "mos:DeviceProfile"],
            "dct:identifier": name, "dct:title": f"Device profile {name}"}


def protocol_standard(driver_name: str, driver_cls: type[Driver] | None) -> Standard | None:
    """The standard a driver's protocol conforms to: the driver's own declaration, else the built-in map."""
    title = driver_cls.standard if driver_cls is not None else ""
    uri = driver_cls.standard_uri if driver_cls is not None else ""
    fallback = PROTOCOL_STANDARDS.get(driver_name)
    if title or uri:
        return Standard(title or (fallback.title if fallback else driver_name), uri)
    return fallback


# ---------------------------------------------------------------- the catalogue


def _variable(dataset_iri: str, tag: TagBase) -> dict[str, Any]:
    data_type = tag.data_type()
    xsd_type = xsd_type_for(data_type)
    node: dict[str, Any] = {
        "@id": f"{dataset_iri}/variable/{_quote(tag.name)}",
        "@type": "mos:Variable",
        "mos:tagName": tag.name,
        "mos:category": {"@id": category_iri(tag.category)},
        "mos:kind": tag.effective_kind(),
        "mos:dataType": data_type,
        # Which line-protocol field carries the readings once the data are shared.
        "mos:field": "text" if xsd_type == "xsd:string" else "value",
    }
    if xsd_type:
        node["mos:valueType"] = {"@id": xsd_type}
    if tag.unit:
        node["mos:ucumCode"] = tag.unit
        unit = units.lookup(tag.unit)
        if unit is not None:
            node["mos:uneceCode"] = unit.unece
            node["mos:unitName"] = unit.name
    if tag.description:
        node["dct:description"] = tag.description  # free text in any language: no language tag guessed
    return node


def _kpi_series(dataset_iri: str, shifts: list[str]) -> list[dict[str, Any]]:
    """The ISO 22400-2 KPI series the agent computes for a device with a ``kpi:`` block: one per
    KPI, each with a value per shift (the ``shift`` label), measurement ``kpi``."""
    series = []
    for name in KPI_NAMES:
        unit = units.lookup(KPI_UNITS[name])
        node: dict[str, Any] = {
            "@id": f"{dataset_iri}/kpi/{name}",
            "@type": "mos:Variable",
            "mos:tagName": name,
            "mos:category": {"@id": category_iri(KPI_CATEGORY)},
            "mos:kind": "sample",
            "mos:dataType": "float",
            "mos:field": "value",
            "mos:valueType": {"@id": "xsd:double"},
            "mos:ucumCode": KPI_UNITS[name],
            "mos:shift": shifts,
            "dct:description": {"@value": KPI_DESCRIPTIONS[name], "@language": "en"},
            "dct:conformsTo": {"@id": ISO_22400_2.uri},
        }
        if unit is not None:
            node["mos:uneceCode"] = unit.unece
            node["mos:unitName"] = unit.name
        series.append(node)
    return series


def _browse_entries(device: DeviceBase) -> list[Any]:
    """A driver's groups of variables discovered at connect time (OPC UA ``browse:`` entries,
    Sparkplug B metric name patterns)."""
    entries = [*(getattr(device, "browse", None) or []), *(getattr(device, "metric_tags", None) or [])]
    return [entry for entry in entries if getattr(entry, "category", None) in CATEGORIES]


def _variable_templates(dataset_iri: str, entries: list[Any]) -> list[dict[str, Any]]:
    """Variable names under a browsed folder are not known until connect time, so only what the
    entry says they share is published — never the node they are browsed from."""
    templates: list[dict[str, Any]] = []
    for index, entry in enumerate(entries):
        category = entry.category
        node: dict[str, Any] = {
            "@id": f"{dataset_iri}/discovered/{index}",
            "@type": "mos:VariableTemplate",
            "mos:category": {"@id": category_iri(category)},
        }
        kind = getattr(entry, "kind", None)
        node["mos:kind"] = kind or DEFAULT_KIND[category]
        prefix = getattr(entry, "prefix", None)
        if isinstance(prefix, str) and prefix:
            node["mos:namePrefix"] = prefix
        pattern = getattr(entry, "metric", None)
        if isinstance(pattern, str) and pattern:
            node["mos:sourceNamePattern"] = pattern  # Sparkplug metric names, before the name mapping
        unit_code = getattr(entry, "unit", None)
        if isinstance(unit_code, str) and (unit := units.lookup(unit_code)) is not None:
            node["mos:ucumCode"] = unit.ucum
            node["mos:uneceCode"] = unit.unece
            node["mos:unitName"] = unit.name
        templates.append(node)
    return templates


def _generated_title(device: DeviceBase) -> str:
    place = "/".join(level for level in (device.asset.area, device.asset.line) if level)
    return f"{device.name} ({device.stage}, {place})"


def _generated_description(device: DeviceBase, site_path: str, protocol: str, categories: list[str]) -> str:
    count = len(device.configured_tags())
    return (f"{count} configured {'variable' if count == 1 else 'variables'} of equipment {device.name} at "
            f"{site_path}, read over {protocol}; process stage {device.stage}; categories: "
            f"{', '.join(categories) or 'none'}. {ACCESS_RIGHTS_EN}")


def _observation_properties(observation: Observation | None, window_default: float | None) -> dict[str, Any]:
    props: dict[str, Any] = {}
    points = observation.points if observation else 0
    measurements: list[dict[str, Any]] = [{
        "@type": "dqv:QualityMeasurement",
        "dqv:isMeasurementOf": {"@id": "mos:pointCount"},
        "dqv:value": {"@value": str(points), "@type": "xsd:integer"},
    }]
    if observation and points:
        for metric, part in (("mos:goodShare", observation.good), ("mos:uncertainShare", observation.uncertain),
                             ("mos:badShare", observation.bad)):
            measurements.append({
                "@type": "dqv:QualityMeasurement",
                "dqv:isMeasurementOf": {"@id": metric},
                "dqv:value": _share(part, points),
            })
    props["dqv:hasQualityMeasurement"] = measurements
    if observation and observation.first_ns is not None and observation.last_ns is not None:
        props["dct:temporal"] = {
            "@type": "dct:PeriodOfTime",
            "dcat:startDate": _datetime_literal(datetime_from_ns(observation.first_ns)),
            "dcat:endDate": _datetime_literal(datetime_from_ns(observation.last_ns)),
        }
    window = observation.window_seconds if observation else window_default
    if window:
        props["mos:observationWindow"] = {"@value": iso_duration(window), "@type": "xsd:duration"}
    if observation:
        props["mos:observedAt"] = _datetime_literal(observation.observed_at)
    return props


def build_catalog(loaded: LoadedConfig, observed: Mapping[str, Observation] | None = None, *,
                  drivers: Mapping[str, type[Driver]] | None = None,
                  now: datetime | None = None,
                  agreements: Mapping[str, Sequence[Contract]] | None = None) -> dict[str, Any]:
    """The JSON-LD catalogue of ``loaded``'s devices.

    ``observed`` maps a dataset identifier (asset path, see :func:`dataset_identifier`) to what the
    store holds; when given, every dataset gets a point count (0 where the store has nothing).
    ``drivers`` maps driver names to classes; by default they come from the driver registry.
    ``agreements`` maps a device name to the contracts whose ODRL agreement its dataset carries
    (default: every contract covering it that has not expired); a dataset without one carries the
    offer, which permits nothing.
    """
    now = now or datetime.now(UTC)
    if agreements is None:
        agreements = covering_contracts(loaded, now)
    agreement_targets: dict[str, list[str]] = {}
    agreement_contracts: dict[str, Contract] = {}
    catalog_cfg = loaded.agent.catalog or CatalogSection()
    base = _base_uri(catalog_cfg.base_uri)
    driver_classes = dict(drivers) if drivers is not None else {}
    window_default = next(iter(observed.values())).window_seconds if observed else None

    datasets: list[dict[str, Any]] = []
    used_categories: list[str] = []
    modified_times: list[datetime] = [t for t in [_mtime(loaded.path)] if t]
    profile_of = {device: info for info in loaded.profiles.values() for device in info.devices}
    for device in loaded.devices:
        if not device.enabled:
            continue
        driver_cls = driver_classes.get(device.driver)
        if driver_cls is None and drivers is None:
            from mos_agent.registry import load_driver

            driver_cls = driver_classes[device.driver] = load_driver(device.driver)
        profile = profile_of.get(device.name)
        file_times = [_mtime(loaded.device_files.get(device.name)), _mtime(profile.path if profile else None)]
        file_time = max((t for t in file_times if t), default=None)
        if file_time:
            modified_times.append(file_time)
        dataset, categories = _dataset(loaded, device, driver_cls, base, file_time, profile)
        if observed is not None:
            dataset.update(_observation_properties(observed.get(dataset["dct:identifier"]), window_default))
        attached = agreements.get(device.name, ())
        if attached:
            dataset["odrl:hasPolicy"] = [{"@id": agreement_iri(base, c)} for c in attached]
            for contract in attached:
                agreement_contracts[contract.id] = contract
                agreement_targets.setdefault(contract.id, []).append(dataset["@id"])
        datasets.append(dataset)
        used_categories.extend(c for c in categories if c not in used_categories)

    catalog = _catalog_node(loaded, catalog_cfg, base, datasets, now,
                            max(modified_times) if modified_times else None)
    used_categories = [c for c in RECORD_CATEGORIES if c in used_categories]  # the taxonomy's order
    graph: list[dict[str, Any]] = [catalog, _category_scheme(used_categories)]
    graph += [_category_concept(c) for c in used_categories]
    graph += [_agreement(base, contract, agreement_targets[contract_id])
              for contract_id, contract in agreement_contracts.items()]
    if observed is not None:
        graph += [{"@id": metric, "@type": "dqv:Metric", "skos:definition": {"@value": text, "@language": "en"}}
                  for metric, text in _QUALITY_METRICS]
    return {"@context": dict(CONTEXT), "@graph": graph}


def _site_path(loaded: LoadedConfig) -> str:
    agent = loaded.agent.agent
    return asset_path({"enterprise": agent.enterprise, "site": agent.site})


def _dataset(loaded: LoadedConfig, device: DeviceBase, driver_cls: type[Driver] | None, base: str,
             modified: datetime | None, profile: ProfileInfo | None) -> tuple[dict[str, Any], list[str]]:
    """One device's ``dcat:Dataset`` (without observations), and its categories."""
    agent = loaded.agent.agent
    identifier = dataset_identifier(loaded, device)
    levels = device_levels(agent.enterprise, agent.site, device)
    dataset_iri = f"{base}dataset/{identifier}"
    browse_entries = _browse_entries(device)
    templates = _variable_templates(dataset_iri, browse_entries)
    categories = list(dict.fromkeys([*(tag.category for tag in device.tags),
                                     *(entry.category for entry in browse_entries)]))
    if device.kpi is not None:
        categories.append(KPI_CATEGORY)
    protocol = PROTOCOL_LABELS.get(device.driver, device.driver)
    conforms = [_standard_node(ISA_95)]
    standard = protocol_standard(device.driver, driver_cls)
    if standard:
        conforms.append(_standard_node(standard))
    if profile is not None:
        # machines of one model share a profile: the data centre sees their datasets as comparable
        conforms.append(_profile_node(base, profile.name))
    if device.kpi is not None:
        conforms.append(_standard_node(ISO_22400_2))

    dataset: dict[str, Any] = {
        "@id": dataset_iri,
        "@type": "dcat:Dataset",
        "dct:identifier": identifier,
        "dct:title": _texts(device.title, _generated_title(device)),
        "dct:description": _texts(device.description,
                                  _generated_description(device, _site_path(loaded), protocol, categories)),
        "dct:publisher": {"@id": "_:publisher"},
        "dcat:contactPoint": {"@id": "_:contact"},
        "dct:accessRights": {"@id": "_:access-rights"},
        "odrl:hasPolicy": {"@id": "_:offer"},
        "mos:assetPath": identifier,
        **{f"mos:{level}": name for level, name in levels.items() if name},
        "mos:stage": device.stage,
        "mos:protocol": protocol,
        "dcat:keyword": _keywords(device, categories, protocol, profile),
        "dcat:theme": [{"@id": category_iri(c)} for c in categories],
        "dct:conformsTo": conforms,
    }
    interval = driver_cls.publishing_interval(device) if driver_cls is not None else device.poll_interval
    if interval:
        dataset["dcat:temporalResolution"] = {"@value": iso_duration(interval), "@type": "xsd:duration"}
    if modified:
        dataset["dct:modified"] = _datetime_literal(modified)
    dataset["mos:variable"] = [_variable(dataset_iri, tag) for tag in device.configured_tags()]
    if device.kpi is not None:
        dataset["mos:kpiSeries"] = _kpi_series(dataset_iri, [s.name for s in loaded.agent.shifts])
    if templates:
        dataset["mos:discoveredVariables"] = templates
    return dataset, categories


def _keywords(device: DeviceBase, categories: list[str], protocol: str, profile: ProfileInfo | None) -> list[Any]:
    """Stage, categories (each also in Korean), protocol, the asset levels below the site and the
    device's profile."""
    keywords: list[Any] = [device.stage]
    if device.stage in STAGE_LABELS_KO:
        keywords.append({"@value": STAGE_LABELS_KO[device.stage], "@language": "ko"})
    keywords += categories
    keywords += [{"@value": CATEGORY_LABELS_KO[c], "@language": "ko"} for c in categories]
    keywords += [protocol, device.asset.area]
    keywords += [level for level in (device.asset.line, device.asset.cell) if level]
    keywords.append(device.name)
    if profile is not None:
        keywords.append(profile.name)
    return keywords


def _catalog_node(loaded: LoadedConfig, catalog_cfg: CatalogSection, base: str, datasets: list[dict[str, Any]],
                  now: datetime, modified: datetime | None) -> dict[str, Any]:
    """The ``dcat:Catalog`` with its publisher, contact, access rights and offer."""
    agent = loaded.agent.agent
    site_path = _site_path(loaded)
    publisher_name = catalog_cfg.publisher or agent.enterprise or agent.site
    catalog: dict[str, Any] = {
        "@id": f"{base}catalog/{_quote(agent.id)}",
        "@type": "dcat:Catalog",
        "dct:identifier": agent.id,
        "dct:title": _texts(catalog_cfg.title, f"Manufacturing data of {site_path} (edge gateway {agent.id})"),
        "dct:description": _texts(
            catalog_cfg.description,
            f"Metadata of the manufacturing time series collected by edge gateway {agent.id} at {site_path}: "
            f"ISA-95 asset paths, process stages, variables with categories, units and data types. "
            f"{ACCESS_RIGHTS_EN}"),
        "dct:publisher": {"@id": "_:publisher", "@type": "foaf:Agent", "foaf:name": publisher_name},
        "dcat:contactPoint": _contact_point(publisher_name, catalog_cfg.contact),
        "dct:accessRights": _access_rights(catalog_cfg.policy),
        "odrl:hasPolicy": _offer(catalog_cfg.policy),
        "dct:issued": _datetime_literal(now),
        "dcat:themeTaxonomy": {"@id": CATEGORY_SCHEME},
        "dct:conformsTo": _standard_node(ISA_95),
        "dcat:dataset": datasets,
    }
    if modified:
        catalog["dct:modified"] = _datetime_literal(modified)
    if catalog_cfg.license:
        catalog["dct:license"] = _license(catalog_cfg.license)
    return catalog


def _access_rights(policy_text: str | None) -> dict[str, Any]:
    rights: dict[str, Any] = {
        "@id": "_:access-rights",
        "@type": "dct:RightsStatement",
        "rdfs:label": [{"@value": ACCESS_RIGHTS_EN, "@language": "en"},
                       {"@value": ACCESS_RIGHTS_KO, "@language": "ko"}],
    }
    if policy_text:
        rights["rdfs:comment"] = policy_text
    return rights


def _offer(policy_text: str | None) -> dict[str, Any]:
    """An ODRL offer without a permission: nothing may be used until a contract (an agreement)
    says so."""
    return {
        "@id": "_:offer",
        "@type": "odrl:Offer",
        "odrl:assigner": {"@id": "_:publisher"},
        "rdfs:comment": [{"@value": policy_text or ACCESS_RIGHTS_EN, "@language": "en"}],
    }


def _contact_point(name: str, contact: str | None) -> dict[str, Any]:
    node: dict[str, Any] = {"@id": "_:contact", "@type": "vcard:Organization", "vcard:fn": name}
    if not contact:
        return node
    text = contact.strip()
    if text.startswith(("mailto:", "http://", "https://", "tel:")):
        key = "vcard:hasURL" if text.startswith("http") else (
            "vcard:hasEmail" if text.startswith("mailto:") else "vcard:hasTelephone")
        node[key] = {"@id": text}
    elif "@" in text and " " not in text:
        node["vcard:hasEmail"] = {"@id": f"mailto:{text}"}
    elif text.lstrip("+").replace("-", "").replace(" ", "").isdigit():
        node["vcard:hasTelephone"] = {"@id": "tel:" + text.replace(" ", "-")}
    else:
        node["vcard:note"] = text
    return node


def _license(text: str) -> dict[str, Any]:
    if text.startswith(("http://", "https://")):
        return {"@id": text, "@type": "dct:LicenseDocument"}
    return {"@type": "dct:LicenseDocument", "rdfs:label": text}


def _category_scheme(used: list[str]) -> dict[str, Any]:
    return {
        "@id": CATEGORY_SCHEME,
        "@type": "skos:ConceptScheme",
        "skos:prefLabel": [{"@value": "mos-agent manufacturing data categories", "@language": "en"},
                           {"@value": "제조 데이터 분류", "@language": "ko"}],
        "skos:hasTopConcept": [{"@id": category_iri(c)} for c in used],
    }


def _category_concept(category: str) -> dict[str, Any]:
    return {
        "@id": category_iri(category),
        "@type": "skos:Concept",
        "skos:inScheme": {"@id": CATEGORY_SCHEME},
        "skos:topConceptOf": {"@id": CATEGORY_SCHEME},
        "skos:notation": category,
        "skos:prefLabel": [{"@value": category.replace("_", " "), "@language": "en"},
                           {"@value": CATEGORY_LABELS_KO[category], "@language": "ko"}],
        "skos:definition": {"@value": CATEGORY_DESCRIPTIONS[category], "@language": "en"},
    }


# ---------------------------------------------------------------- contracts: ODRL agreements


def covering_contracts(loaded: LoadedConfig, now: datetime) -> dict[str, list[Contract]]:
    """Device name → the contracts releasing it that have not expired at ``now``."""
    from mos_agent.sharing.contracts import ContractStatus

    now_ns = int(now.timestamp() * 1e9)
    contracts = [c for c in getattr(loaded, "contracts", None) or [] if c.status(now_ns) != ContractStatus.EXPIRED]
    return {device.name: [c for c in contracts if c.covers_equipment(device.name)] for device in loaded.devices}


def agreement_iri(base: str, contract: Contract) -> str:
    return f"{base}agreement/{_quote(contract.id)}"


def _agreement(base: str, contract: Contract, targets: list[str]) -> dict[str, Any]:
    """The contract as an ODRL agreement: the plant (assigner) lets the consumer (assignee) use
    the target datasets within the validity, in the released categories and resolution."""
    from mos_agent.sharing.contracts import describe_categories

    def bound(operator: str, ns: int) -> dict[str, Any]:
        return {"@type": "odrl:Constraint", "odrl:leftOperand": {"@id": "odrl:dateTime"},
                "odrl:operator": {"@id": operator}, "odrl:rightOperand": _datetime_literal(datetime_from_ns(ns))}

    resolution: dict[str, str] | str = "raw"
    if contract.resolution_ns is not None:
        resolution = {"@value": iso_duration(contract.resolution_ns / 1e9), "@type": "xsd:duration"}
    node: dict[str, Any] = {
        "@id": agreement_iri(base, contract),
        "@type": "odrl:Agreement",
        "odrl:uid": contract.id,
        "dct:identifier": contract.id,
        "odrl:assigner": {"@id": "_:publisher"},
        "odrl:assignee": {"@type": ["odrl:Party", "foaf:Agent"], "foaf:name": contract.consumer},
        "odrl:permission": {
            "@type": "odrl:Permission",
            "odrl:target": [{"@id": target} for target in targets],
            "odrl:action": {"@id": "odrl:use"},
            "odrl:constraint": [bound("odrl:gteq", contract.valid_from_ns), bound("odrl:lteq", contract.valid_to_ns)],
            "mos:releasedCategory": [{"@id": category_iri(c)} for c in describe_categories(contract)],
            "mos:resolution": resolution,
            "mos:pseudonymised": contract.pseudonymise,
        },
    }
    title = _texts(contract.title)
    if title:
        node["dct:title"] = title
    return node
