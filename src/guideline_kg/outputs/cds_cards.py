"""CDS Hooks 2.0 cards for a case's result (the one patient result, :class:`reasoning.derive.CaseResult`).

What the cards say, in order (docs/export.md, CDS Hooks):

* ``critical``: each urgent finding (``CaseResult.urgent``), naming the implied action and the source line;
* ``warning``: each conflict (``CaseResult.conflicts``) as ONE card naming both statements, with a suggestion
  for each side (``selectionBehavior`` ``at-most-one``); then advice against and cautions with an action;
* ``info``: every other applicable statement that names a care action;
* a card saying which data is missing (the questions of the undetermined statements, or of the scope), and a
  card saying the patient is outside the guideline's population when so.

Statements without a care action (evidence, cautions, prognosis) and the section headings are folded into the
detail of the card of their section. Each card has a ``uuid`` (stable per case and statement), a summary
shorter than 140 characters cut at a word, ``source`` (label and the statement's IRI), ``links`` to the
statement's page and ``suggestions`` proposing the action as a FHIR R4 request resource (``ServiceRequest`` or
``MedicationRequest``, as the package's mapping says; ``doNotPerform`` for advice against).

An invalid case gets :func:`refusal_cards`: one card saying why, and no recommendation.
Everything the cards know of the guideline comes from the graph (``queries/cds-statements.rq``,
``queries/cds-actions.rq``) and from the package's FHIR case mapping (``"cds"``); no id, term or code is here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rdflib import Graph

from guideline_kg.cases.fhir_in import read_sssom
from guideline_kg.core.errors import InputError
from guideline_kg.core.files import load_json
from guideline_kg.core.namespaces import GK
from guideline_kg.core.project import Project
from guideline_kg.core.queries import load_query
from guideline_kg.store.stores import EmbeddedStore

__all__ = ["CARD_NAMESPACE", "SUMMARY_LIMIT", "CdsKnowledge", "OrderMapping", "cards_for", "cds_knowledge",
           "order_actions", "refusal_cards", "summary"]

#: CDS Hooks 2.0 (Card Attributes): "One-sentence, <140-character summary"; a summary is at most 139 characters.
SUMMARY_LIMIT = 140
#: UUID namespace of card and suggestion uuids (uuid5 of case and statement), so a card keeps its uuid.
CARD_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, str(GK) + "cds-card")
#: FHIR's code system for a code that is a URI (a care action's IRI): https://hl7.org/fhir/R4/terminologies-systems.html
URI_SYSTEM = "urn:ietf:rfc:3986"
#: Where the statement page lives under the server's base (the resource page of `serve`).
STATEMENT_PAGE = "{base}/resource?iri={iri}"
_ORDER = {"critical": 0, "warning": 1, "info": 2}


def summary(text: str, limit: int = SUMMARY_LIMIT) -> str:
    """``text`` on one line, shorter than ``limit`` characters: cut at the last word that fits, with an ellipsis."""
    one = " ".join(text.split())
    if len(one) < limit:
        return one
    cut = one[: limit - 2]  # room for the ellipsis
    if " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:.-\u2013\u2014") + "\u2026"


@dataclass
class OrderMapping:
    """The codes of draft orders and the care action each names (``"cds"."orders"`` of the FHIR case mapping)."""

    resources: dict[str, str]
    codes: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def actions_of(self, resource: dict[str, Any]) -> list[str]:
        """The care-action IRIs a draft order's codes name (empty when none is mapped or the type is not read)."""
        element = self.resources.get(str(resource.get("resourceType")))
        concept = resource.get(element) if element else None
        codings = concept.get("coding") if isinstance(concept, dict) else None
        out: list[str] = []
        for coding in codings if isinstance(codings, list) else []:
            if isinstance(coding, dict):
                for action in self.codes.get((str(coding.get("system")), str(coding.get("code"))), []):
                    if action not in out:
                        out.append(action)
        return out


@dataclass
class CdsKnowledge:
    """What cards need of the guideline, read once per graph: title, each statement's kind, urgency, direction
    and section, each care action's label and ancestors, and the package's CDS settings."""

    title: str
    statements: dict[str, dict[str, Any]]
    labels: dict[str, str]
    ancestors: dict[str, set[str]]
    suggest: dict[str, set[str]]
    default_resource: str
    orders: OrderMapping | None

    def related(self, action: str, others: Iterable[str]) -> bool:
        """Whether ``action`` is one of ``others`` or a broader or narrower action of one of them."""
        return any(o in self.ancestors.get(action, {action}) or action in self.ancestors.get(o, {o}) for o in others)

    def resource_type(self, action: str) -> str:
        """The FHIR request resource that proposes ``action`` (``"cds"."suggest"`` of the mapping)."""
        above = self.ancestors.get(action, {action})
        for rtype, roots in self.suggest.items():
            if above & roots:
                return rtype
        return self.default_resource


_cache: dict[tuple[int, int, str], CdsKnowledge] = {}


def _expand(curie: str, prefixes: dict[str, str]) -> str:
    prefix, sep, local = curie.partition(":")
    if sep and prefix in prefixes:
        return prefixes[prefix] + local
    if sep and prefix == "gk":
        return str(GK) + local
    return curie


def _cds_settings(project: Project) -> tuple[dict[str, set[str]], str, OrderMapping | None]:
    """``"cds"`` of the package's FHIR case mapping: how suggestions are typed, and the order-code mapping."""
    path = project.part("fhir_case_mapping")
    if path is None:
        return {}, "ServiceRequest", None
    try:
        data = load_json(Path(path).read_bytes(), path)
    except OSError as exc:
        raise InputError(f"cannot read the FHIR case mapping ({exc.strerror})", path=str(path)) from None
    cds = data.get("cds") if isinstance(data, dict) else None
    if not isinstance(cds, dict):
        return {}, "ServiceRequest", None
    prefixes = {"gk": str(GK)}
    suggest_raw = cds.get("suggest", {})
    suggest = {k: {_expand(c, prefixes) for c in v} for k, v in suggest_raw.items()
               if k not in ("about", "default") and isinstance(v, list)}
    default = str(suggest_raw.get("default", "ServiceRequest"))
    orders_raw = cds.get("orders")
    if not isinstance(orders_raw, dict) or "sssom" not in orders_raw:
        return suggest, default, None
    curie_map, rows = read_sssom(Path(path).parent / str(orders_raw["sssom"]))
    systems = {**data.get("codeSystems", {}), **orders_raw.get("codeSystems", {})}
    by_prefix = {prefix: system for system, prefix in systems.items()}
    recognise = {_expand(p, curie_map) for p in orders_raw.get("recognise", ["skos:exactMatch"])}
    mapping = OrderMapping(resources=dict(orders_raw.get("resources", {})))
    for row in rows:
        prefix, _, code = row["subject_id"].partition(":")
        if prefix in by_prefix and _expand(row["predicate_id"], curie_map) in recognise:
            mapping.codes.setdefault((by_prefix[prefix], code), []).append(_expand(row["object_id"], curie_map))
    return suggest, default, mapping


def cds_knowledge(graph: Graph, project: Project) -> CdsKnowledge:
    """The :class:`CdsKnowledge` of ``graph`` (cached per graph and size)."""
    key = (id(graph), len(graph), str(project.kg_dir))
    if key not in _cache:
        store = EmbeddedStore.from_graph(graph)
        title = next((str(r["title"]) for r in store.select(
            load_query(project.queries_dir, "export-guideline").text).dicts()), "guideline")
        statements: dict[str, dict[str, Any]] = {}
        for r in store.select(load_query(project.queries_dir, "cds-statements").text).dicts():
            s = statements.setdefault(str(r["statement"]), {"kind": str(r["kind"]), "urgent": False,
                                                            "direction": None, "section": None,
                                                            "section_title": None})
            s["urgent"] = s["urgent"] or str(r["urgent"]).lower() == "true"
            s["direction"] = s["direction"] or (str(r["direction"]) if r["direction"] else None)
            s["section"] = s["section"] or (str(r["section"]) if r["section"] else None)
            s["section_title"] = s["section_title"] or (str(r["sectionTitle"]) if r["sectionTitle"] else None)
        labels: dict[str, str] = {}
        ancestors: dict[str, set[str]] = {}
        for r in store.select(load_query(project.queries_dir, "cds-actions").text).dicts():
            labels[str(r["action"])] = str(r["label"])
            ancestors.setdefault(str(r["action"]), {str(r["action"])}).add(str(r["ancestor"]))
        suggest, default, orders = _cds_settings(project)
        _cache.clear()
        _cache[key] = CdsKnowledge(title, statements, labels, ancestors, suggest, default, orders)
    return _cache[key]


def order_actions(draft_orders: Any, selections: list[str], knowledge: CdsKnowledge) -> list[str]:
    """The care actions the selected draft orders name (``context.selections`` as ``Type/id`` in the
    ``context.draftOrders`` Bundle), in order, each once."""
    if knowledge.orders is None:
        return []
    wanted = set(selections)
    out: list[str] = []
    entries = draft_orders.get("entry") if isinstance(draft_orders, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        res = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(res, dict) or f"{res.get('resourceType')}/{res.get('id')}" not in wanted:
            continue
        out += [a for a in knowledge.orders.actions_of(res) if a not in out]
    return out


# ---------------------------------------------------------------------------------------------------- the cards

def _line(rec: dict[str, Any]) -> str:
    lines = rec.get("source_lines") or []
    return ("line " if len(lines) == 1 else "lines ") + ", ".join(str(n) for n in lines)


def _plain(text: str) -> str:
    """A statement's text as a summary: one line, without the colon of a lead-in."""
    return " ".join(text.split()).rstrip(":").strip()


class _Builder:
    """Makes the cards of one result; remembers the texts used so no two cards say the same thing."""

    def __init__(self, data: dict[str, Any], kn: CdsKnowledge, base: str | None, patient_ref: str) -> None:
        self.data, self.kn, self.base, self.patient_ref = data, kn, base, patient_ref
        self.recs = {r["id"]: r for r in data["recommendations"]}

    def uid(self, *parts: str) -> str:
        return str(uuid.uuid5(CARD_NAMESPACE, "|".join([self.data["case"], *parts])))

    def page(self, iri: str) -> str:
        return STATEMENT_PAGE.format(base=self.base.rstrip("/"), iri=quote(iri, safe="")) if self.base else iri

    def links(self, recs: list[dict[str, Any]]) -> list[dict[str, str]]:
        return [{"label": f"The statement ({_line(r)}) and why it applies", "url": self.page(r["id"]),
                 "type": "absolute"} for r in recs]

    def source(self, recs: list[dict[str, Any]]) -> dict[str, Any]:
        cites = sorted({n for r in recs for n in r.get("citations") or []})
        label = f"{self.kn.title}, {' and '.join(_line(r) for r in recs)}"
        label += f" (reference{'s' if len(cites) > 1 else ''} {', '.join(map(str, cites))})" if cites else ""
        return {"label": label, "url": recs[0]["id"]}

    def suggestion(self, rec: dict[str, Any], action: str, against: bool, key: str) -> dict[str, Any]:
        label = self.kn.labels.get(action, action.rsplit("#", 1)[-1])
        rtype = self.kn.resource_type(action)
        concept = {"coding": [{"system": URI_SYSTEM, "code": action, "display": label}], "text": label}
        resource: dict[str, Any] = {"resourceType": rtype, "id": self.uid(rec["id"], action, key)[:36],
                                    "status": "draft", "intent": "proposal",
                                    "subject": {"reference": self.patient_ref}}
        resource["medicationCodeableConcept" if rtype == "MedicationRequest" else "code"] = concept
        if against:
            resource["doNotPerform"] = True
        verb = "Do not perform" if against else "Propose"
        return {"label": summary(f"{verb}: {label} ({_line(rec)})", 80), "uuid": self.uid(rec["id"], action, key, "s"),
                "isRecommended": True,
                "actions": [{"type": "create", "description": f"{verb} {label}, as {_line(rec)} of the guideline "
                                                               f"{'advises' if not against else 'advises against'}"
                                                               + (" (doNotPerform)" if against else ""),
                             "resource": resource}]}

    def detail(self, rec: dict[str, Any], extra: list[str]) -> str:
        fact = self.kn.statements.get(rec["id"], {})
        head = f"**{fact.get('kind', 'statement').replace('-', ' ').capitalize()}** ({_line(rec)}"
        head += f", {fact['section_title']}" if fact.get("section_title") else ""
        head += ")"
        bits = [f"direction: {rec['direction']}" if rec.get("direction") else None,
                f"strength as worded: *{rec['strength']}*" if rec.get("strength") else None]
        out = [head + (": " + "; ".join(b for b in bits if b) if any(bits) else ""), "", f"> {rec['text']}", "",
               "**Why this applies to the patient**"]
        out += [f"- {b}" for b in rec.get("because") or ["every condition of its population is met"]]
        if rec.get("note"):
            out += ["", f"*Note:* {rec['note']}"]
        return "\n".join(out + extra)

    def card(self, key: str, indicator: str, text: str, detail: str, recs: list[dict[str, Any]],
             suggestions: list[dict[str, Any]], behaviour: str = "any") -> dict[str, Any]:
        card: dict[str, Any] = {"uuid": self.uid(key), "summary": summary(text), "detail": detail,
                                "indicator": indicator, "source": self.source(recs) if recs else
                                {"label": self.kn.title}}
        if suggestions:
            card["suggestions"] = suggestions
            card["selectionBehavior"] = behaviour
        if recs:
            card["links"] = self.links(recs)
        return card


def _folded(b: _Builder, shown: set[str], sections: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    """The detail lines each section's first card gets: the applicable statements without a care action of that
    section (evidence, cautions, prognosis), by source line."""
    out: dict[str, list[str]] = {}
    for section, recs in sections.items():
        lines = [f"- *{b.kn.statements.get(r['id'], {}).get('kind', 'statement')}* ({_line(r)}): {r['text']}"
                 for r in recs if r["id"] not in shown]
        if lines:
            title = b.kn.statements.get(recs[0]["id"], {}).get("section_title") or "this part of the guideline"
            out[section] = ["", f"**Also in {title}** (applies to the patient)", *lines]
    return out


def cards_for(case_result: Any, knowledge_graph: Graph, project: Project | None = None, *,
              base_url: str | None = None, patient_ref: str | None = None,
              actions: list[str] | None = None) -> dict[str, Any]:
    """``{"cards": [...]}`` for ``case_result`` (a :class:`derive.CaseResult` or its ``to_json()``).

    ``base_url``: the server's base, for links to the statement pages (without it the links are the statements'
    IRIs). ``patient_ref``: the ``Patient/<id>`` the suggested resources are for (default: the case's name).
    ``actions``: for order-select, the care actions of the selected draft orders; only the statements about
    them (or a broader or narrower action), the conflicts between those and the urgent findings are carded.
    """
    project = project or Project.at()
    kn = cds_knowledge(knowledge_graph, project)
    data = case_result.to_json() if hasattr(case_result, "to_json") else case_result
    ref = patient_ref or f"Patient/{re.sub(r'[^A-Za-z0-9.-]', '-', str(data['case']))[:64]}"
    b = _Builder(data, kn, base_url, ref)
    recs = data["recommendations"]

    def about_order(rec: dict[str, Any]) -> bool:
        return actions is None or any(kn.related(a, actions) for a in rec.get("action") or [])

    cards: list[dict[str, Any]] = []
    shown: set[str] = set()
    texts: set[str] = set()
    section_card: dict[str, dict[str, Any]] = {}

    def note_sections(card: dict[str, Any], members: list[dict[str, Any]]) -> None:
        for r in members:
            section = kn.statements.get(r["id"], {}).get("section")
            if section and section not in section_card:
                section_card[section] = card

    # 1. urgency: the implied action, with the source line and the finding
    for u in data.get("urgent") or []:
        rec = b.recs.get(u["statement"])
        if rec is None:
            continue
        same = [r for r in recs if r["status"] == "applicable" and r["text"] == rec["text"] and r["id"] != rec["id"]]
        extra = [""] + [f"The same line also asks: *{_plain(r['text'])}* (the assessment that found it)." for r in same]
        card = b.card(rec["id"], "critical", f"URGENT: {u['action']} ({_line(rec)}): {u['finding']}",
                      f"**Urgent: {u['action']}**, because the patient has: {u['finding']}.\n\n"
                      + b.detail(rec, extra), [rec],
                      [b.suggestion(rec, a, False, "urgent") for a in rec.get("action") or []])
        cards.append(card)
        shown |= {rec["id"], *(r["id"] for r in same)}
        texts.add(rec["text"])
        note_sections(card, [rec])

    # 2. each conflict: one warning card naming both statements, a suggestion for each side
    for c in data.get("conflicts") or []:
        pro, con = b.recs.get(c["for"]), b.recs.get(c["against"])
        if pro is None or con is None or not (about_order(pro) or about_order(con)):
            continue
        suggestions = [b.suggestion(pro, a, False, "conflict") for a in pro.get("action") or []] + \
                      [b.suggestion(con, a, True, "conflict") for a in con.get("action") or []]
        for s in suggestions:
            s.pop("isRecommended", None)  # the guideline does not say which prevails (see the resolution)
        detail = "\n".join([
            f"**Conflict on {c['action']}**: {_line(pro)} advises for it, {_line(con)} against it, and both "
            "apply to the patient.", "",
            f"- For ({_line(pro)}): {c['for_text']}", f"- Against ({_line(con)}): {c['against_text']}", "",
            f"**How the conflict is read:** {c['resolution']}", "",
            "**Why each applies**", *[f"- {_line(r)}: {x}" for r in (pro, con) for x in r.get("because") or []]])
        card = b.card(f"{pro['id']}|{con['id']}", "warning",
                      f"Conflict on {c['action']}: {_line(pro)} for, {_line(con)} against", detail, [pro, con],
                      suggestions, "at-most-one")
        cards.append(card)
        shown |= {pro["id"], con["id"]}
        note_sections(card, [pro, con])

    # 3. every other applicable statement that names a care action, once per text
    for rec in recs:
        if rec["status"] != "applicable" or not rec.get("action") or rec["id"] in shown or not about_order(rec):
            continue
        if rec["text"] in texts:
            shown.add(rec["id"])
            continue
        fact = kn.statements.get(rec["id"], {})
        against = (rec.get("direction") or fact.get("direction")) == "against"
        indicator = "warning" if against or fact.get("kind") == "caution" else "info"
        card = b.card(rec["id"], indicator, _plain(rec["text"]), b.detail(rec, []), [rec],
                      [b.suggestion(rec, a, against, "card") for a in rec["action"]])
        cards.append(card)
        shown.add(rec["id"])
        texts.add(rec["text"])
        note_sections(card, [rec])

    # 4. evidence, cautions and prognosis without an action: into the detail of their section's card
    by_section: dict[str, list[dict[str, Any]]] = {}
    for rec in recs:
        section = kn.statements.get(rec["id"], {}).get("section")
        if rec["status"] == "applicable" and not rec.get("action") and section:
            by_section.setdefault(section, []).append(rec)
    for section, lines in _folded(b, shown, by_section).items():
        if section in section_card:
            section_card[section]["detail"] += "\n" + "\n".join(lines)

    # 5. what is missing: the scope's questions, or those of the undetermined statements with an action
    scope = data.get("scope") or {}
    if scope.get("status") == "out":
        cards.append(b.card("scope", "info", f"Outside the guideline's population: "
                                             f"{'; '.join(scope.get('reasons') or ['see the reasons'])}",
                            "**Outside the guideline's population**, so none of its statements apply:\n\n"
                            + "\n".join(f"- {r}" for r in scope.get("reasons") or []), [], []))
    missing: dict[str, list[str]] = {}
    if scope.get("status") not in ("in", "out"):
        for m in scope.get("missing") or []:
            missing.setdefault(m, []).append("whether the guideline applies")
    for rec in recs:
        if rec["status"] == "undetermined" and rec.get("action") and about_order(rec):
            for m in rec.get("missing") or []:
                missing.setdefault(m, []).append(_line(rec))
    if missing:
        n = len({x for v in missing.values() for x in v})
        what = "whether the guideline applies" if scope.get("status") not in ("in", "out") else \
            f"{n} more recommendation{'s' if n != 1 else ''}"
        cards.append(b.card("missing", "info", f"Data missing: {len(missing)} question"
                                               f"{'s' if len(missing) != 1 else ''} would decide {what}",
                            "**Record these to decide " + what + "**\n\n"
                            + "\n".join(f"- [ ] {q} (for {', '.join(sorted(set(w)))})"
                                        for q, w in missing.items()), [], []))
    cards.sort(key=lambda c: _ORDER[c["indicator"]])  # stable: urgent, conflicts, then source-line order
    _distinct_summaries(cards)
    return {"cards": cards}


def _distinct_summaries(cards: list[dict[str, Any]]) -> None:
    """No two cards with the same summary: a repeat gets its card's source line (cut again to the limit)."""
    seen: set[str] = set()
    for card in cards:
        if card["summary"] in seen:
            card["summary"] = summary(card["summary"].rstrip("\u2026") + f" ({card['uuid'][:8]})")
        seen.add(card["summary"])


def refusal_cards(case: str, violations: list[dict[str, Any]], title: str) -> dict[str, Any]:
    """The answer for a case the gate refuses: one ``warning`` card saying why, with the violations summarised,
    and no recommendation (docs/validation.md: an invalid case gets its violations and nothing else)."""
    n = len(violations)
    lines = [f"- {v.get('message') or v.get('text') or v}" + (f" (`{v['path']}`)" if v.get("path") else "")
             for v in violations[:20]]
    if n > 20:
        lines.append(f"- ... and {n - 20} more")
    return {"cards": [{
        "uuid": str(uuid.uuid5(CARD_NAMESPACE, f"{case}|invalid")),
        "summary": summary(f"No recommendations: the patient's data fails {n} check{'s' if n != 1 else ''} "
                           "of the guideline's case shapes"),
        "detail": "**The patient's data was refused**, so no statement of the guideline was evaluated. "
                  "Correct or complete the record:\n\n" + "\n".join(lines),
        "indicator": "warning",
        "source": {"label": title}}]}
