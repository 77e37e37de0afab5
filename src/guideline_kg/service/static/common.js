// Helpers shared by the pages of guideline-kg serve. Plain JavaScript, nothing loaded from elsewhere.
// Every text from a case or a result goes into the page as a text node (never as HTML).
"use strict";
const GK = {};
GK.$ = (id) => document.getElementById(id);
// el("p", {class: "x", title: "y"}, "text", otherNode, ...): an element; strings become text nodes.
GK.el = function (tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return node;
};
GK.prefixes = {};
// The prefixed name of an IRI of a declared namespace (longest namespace first), else the IRI.
GK.qname = function (iri) {
  let best = null;
  for (const [p, ns] of Object.entries(GK.prefixes)) {
    if (iri.startsWith(ns) && iri.length > ns.length && (!best || ns.length > best[1].length)) best = [p, ns];
  }
  return best ? best[0] + ":" + iri.slice(best[1].length) : iri;
};
GK.local = (iri) => String(iri).split("#").pop().split("/").pop();
// A link to the resource page of an IRI, shown as its prefixed name (or `text`).
GK.link = function (iri, text) {
  return GK.el("a", {href: "/resource?iri=" + encodeURIComponent(iri), title: iri, class: "iri"}, text || GK.qname(iri));
};
GK.json = async function (url, body) {
  const resp = await fetch(url, body === undefined ? {} : {method: "POST",
    headers: {"Content-Type": "application/json", "Accept": "application/json"}, body: JSON.stringify(body)});
  const text = await resp.text();
  let data = null;
  try { data = JSON.parse(text); } catch (e) { data = {error: text.trim() || ("HTTP " + resp.status)}; }
  return {status: resp.status, data: data};
};
