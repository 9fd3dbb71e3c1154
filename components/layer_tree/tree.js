// FreezeLab layer tree (Streamlit Custom Components v2, plain ES module, no build step).
//
// Streamlit calls the default export again on every rerun, so it is idempotent: it finds or
// creates one root under `parentElement`, wires the listeners once per root (event delegation)
// and redraws everything from `data`. What it shows always comes from the flags in `data`; a
// click only changes the local view until the rerun brings the flags Python applied.
//
// Layer names come from uploaded models and are untrusted: text is set with `textContent`,
// attributes with `setAttribute`, never through HTML parsing.

const STATE_KEY = "frozen";
const LORA_TRIGGER = "lora";
const LORA_ADD_TOOLTIP =
  "Add a LoRA adapter (rank and alpha as set above the tree): the kernel is frozen and two " +
  "small matrices learn a low-rank change to it; the bias keeps training.";
const LORA_REMOVE_TOOLTIP =
  "Remove this LoRA adapter: what it learned is merged into the kernel (the model keeps its " +
  "function), and the layer trains in full again.";
const BN_TOOLTIP = "BatchNormalization: frozen = inference mode, moving statistics fixed";
const STILL_TRAINS_TOOLTIP =
  "A parent's flag is False, but this layer's own flag is True. Keras trains it anyway: " +
  "only the top model's flag gates fit, so a frozen nested model does not stop its children.";
const TOP_FROZEN_TOOLTIP =
  "This layer's own flag is True, but the top model's flag is False, so fit trains nothing " +
  "in the model. Unfreeze the top model to train it.";
const SHARED_TOOLTIP =
  "Shared layer: used at more than one place, so its weights serve all of them. " +
  "Freezing it freezes every use.";

// Expand/collapse and search text, kept across reruns and remounts. Keyed by the tree's root
// path, so a remount with a new Streamlit key (after a bulk action) keeps what the user opened.
const MEMORY = new Map();
// Per-root controller: listeners are attached once per root element.
const CONTROLLERS = new WeakMap();

function memoryFor(id) {
  let memory = MEMORY.get(id);
  if (!memory) {
    memory = { expanded: new Map(), allExpanded: null, search: "" };
    MEMORY.set(id, memory);
  }
  return memory;
}

function compact(value) {
  const n = Number(value) || 0;
  const abs = Math.abs(n);
  const units = [
    [1e9, "G"],
    [1e6, "M"],
    [1e3, "k"],
  ];
  for (const [size, suffix] of units) {
    if (abs >= size) {
      const scaled = n / size;
      const text = abs >= size * 100 ? scaled.toFixed(0) : scaled.toFixed(1);
      return text.replace(/\.0$/, "") + suffix;
    }
  }
  return String(n);
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function badge(kind, label, tooltip) {
  const span = element("span", `badge ${kind}`, label);
  span.setAttribute("title", tooltip);
  return span;
}

// ------------------------------------------------------------------------------- the model
// Plain arrays indexed like the pre-order node list.
function buildModel(data) {
  const raw = data && Array.isArray(data.nodes) ? data.nodes : [];
  const nodes = raw.map((n, i) => {
    const node = n && typeof n === "object" ? n : {};
    return { ...node, path: typeof node.path === "string" ? node.path : `#${i}` };
  });
  const count = nodes.length;
  const parent = new Int32Array(count).fill(-1);
  const end = new Int32Array(count); // subtree of i is [i, end[i])
  const indexOf = new Map();
  nodes.forEach((n, i) => indexOf.set(n.path, i));
  nodes.forEach((n, i) => {
    parent[i] = Number.isInteger(n.parent) && n.parent >= 0 && n.parent < i ? n.parent : -1;
  });
  // Children come after their parent, so one backward pass gives every subtree's end.
  for (let i = 0; i < count; i += 1) end[i] = i + 1;
  for (let i = count - 1; i > 0; i -= 1) {
    const p = parent[i];
    if (p >= 0 && end[i] > end[p]) end[p] = end[i];
  }
  const frozen = nodes.map((n) => n.trainable === false);
  const loraChips = Boolean(data && data.lora_chips);
  return { id: String((data && data.root) ?? ""), nodes, parent, end, indexOf, frozen, loraChips };
}

function hasChildren(model, i) {
  return model.end[i] > i + 1;
}

// Flags derived from the (possibly locally clicked) own flags, with the core's rules:
// effectively trainable = own flag AND the top model's flag; ancestor frozen = own flag True
// while some ancestor's flag is False; mixed = the subtree (node included) has both states.
function derive(model) {
  const { nodes, parent, end, frozen } = model;
  const count = nodes.length;
  const rootTrainable = count > 0 && !frozen[0];
  const prefix = new Int32Array(count + 1);
  for (let i = 0; i < count; i += 1) prefix[i + 1] = prefix[i] + (frozen[i] ? 1 : 0);
  const aboveFrozen = new Uint8Array(count);
  const out = [];
  for (let i = 0; i < count; i += 1) {
    const p = parent[i];
    aboveFrozen[i] = p >= 0 && (aboveFrozen[p] || frozen[p]) ? 1 : 0;
    const inSubtree = prefix[end[i]] - prefix[i];
    const size = end[i] - i;
    out.push({
      effective: !frozen[i] && rootTrainable,
      ancestorFrozen: !frozen[i] && aboveFrozen[i] === 1,
      mixed: size > 1 && inSubtree > 0 && inSubtree < size,
    });
  }
  return out;
}

function isExpanded(model, memory, i) {
  const path = model.nodes[i].path;
  if (memory.expanded.has(path)) return memory.expanded.get(path);
  if (memory.allExpanded !== null) return memory.allExpanded;
  return Boolean(model.nodes[i].is_model) && (model.nodes[i].depth ?? 0) < 2;
}

// ----------------------------------------------------------------------------- the DOM
function createRoot(parentElement) {
  const root = element("div", "fl-tree");
  root.setAttribute("data-testid", "freezelab-layer-tree");
  parentElement.appendChild(root);
  return root;
}

function setUp(root) {
  const toolbar = element("div", "fl-toolbar");
  const search = element("input");
  search.setAttribute("type", "search");
  search.setAttribute("aria-label", "search layers");
  search.setAttribute("placeholder", "Search layers by name or class");
  const expandAll = element("button", "fl-expand-all", "Expand all");
  expandAll.setAttribute("type", "button");
  expandAll.dataset.action = "expand-all";
  const collapseAll = element("button", "fl-collapse-all", "Collapse all");
  collapseAll.setAttribute("type", "button");
  collapseAll.dataset.action = "collapse-all";
  const summary = element("span", "fl-summary");
  summary.setAttribute("aria-live", "polite");
  toolbar.append(search, expandAll, collapseAll, summary);
  const list = element("div", "fl-list");
  list.setAttribute("role", "group");
  list.setAttribute("aria-label", "layers");
  root.replaceChildren(toolbar, list);

  const controller = { root, search, summary, list, rows: [], model: null, memory: null };
  controller.setStateValue = () => {};
  controller.setTriggerValue = () => {};

  root.addEventListener("click", (event) => {
    const target = event.target instanceof Element ? event.target : null;
    if (!target || !controller.model) return;
    const chip = target.closest("button.fl-lora");
    if (chip) {
      chip.disabled = true; // one request per click; the rerun redraws the row
      controller.setTriggerValue(LORA_TRIGGER, chip.getAttribute("data-path"));
      return;
    }
    const caret = target.closest("button.caret");
    if (caret) {
      const i = controller.model.indexOf.get(caret.getAttribute("data-path"));
      if (i === undefined) return;
      controller.memory.expanded.set(
        controller.model.nodes[i].path,
        !isExpanded(controller.model, controller.memory, i),
      );
      update(controller);
      return;
    }
    const action = target.closest("button[data-action]");
    if (action) {
      const memory = controller.memory;
      memory.expanded.clear();
      memory.allExpanded = action.dataset.action === "expand-all";
      update(controller);
    }
  });

  root.addEventListener("change", (event) => {
    const box = event.target;
    if (!(box instanceof HTMLInputElement) || box.type !== "checkbox" || !controller.model) return;
    const model = controller.model;
    const i = model.indexOf.get(box.getAttribute("data-path"));
    if (i === undefined) return;
    // Keras semantics: `layer.trainable = v` sets v on the layer and every descendant.
    for (let j = i; j < model.end[i]; j += 1) model.frozen[j] = box.checked;
    update(controller);
    const plan = model.nodes.filter((_, j) => model.frozen[j]).map((n) => n.path);
    plan.sort();
    controller.setStateValue(STATE_KEY, plan);
  });

  search.addEventListener("input", () => {
    if (!controller.memory) return;
    controller.memory.search = search.value;
    update(controller);
  });

  CONTROLLERS.set(root, controller);
  return controller;
}

// "kernel 288 frozen (LoRA) · bias 32 trains · ..." for a row's tooltip.
function variablesText(node) {
  const variables = Array.isArray(node.variables) ? node.variables : [];
  return variables
    .map(([name, params, trains]) => `${name} ${Number(params).toLocaleString("en-US")} ` +
      (trains ? "trains" : "does not train"))
    .join(" · ");
}

function buildRow(node, i, model, chips) {
  const row = element("div", "row");
  row.setAttribute("data-path", node.path);
  row.style.setProperty("--depth", String(Math.max(0, Number(node.depth) || 0)));

  let caret;
  if (hasChildren(model, i)) {
    caret = element("button", "caret", "▶");
    caret.setAttribute("type", "button");
    caret.setAttribute("data-path", node.path);
    caret.setAttribute("aria-label", `expand ${node.path}`);
  } else {
    caret = element("span", "caret-spacer");
  }

  const box = element("input");
  box.setAttribute("type", "checkbox");
  box.setAttribute("data-path", node.path);
  box.setAttribute("aria-label", `freeze ${node.path}`);

  const snow = element("span", "fl-snow", "❄");
  snow.setAttribute("aria-hidden", "true");
  const name = element("span", "fl-name", String(node.name ?? node.path));
  name.setAttribute("title", node.path);
  const cls = element("span", "fl-class", String(node.class_name ?? ""));

  const trainable = Number(node.trainable_params) || 0;
  const nonTrainable = Number(node.non_trainable_params) || 0;
  const params = element("span", "fl-params", `${compact(trainable)} / ${compact(nonTrainable)}`);
  params.setAttribute(
    "title",
    `${trainable.toLocaleString()} trainable / ${nonTrainable.toLocaleString()} ` +
      "non-trainable parameters (this layer and everything under it)",
  );

  const badges = element("span", "fl-badges");
  if (node.is_batch_norm) badges.append(badge("bn", "BN", BN_TOOLTIP));
  const stillTrains = badge("warn", "parent frozen, still trains", STILL_TRAINS_TOOLTIP);
  const topFrozen = badge("info", "flag says trainable, top model frozen", TOP_FROZEN_TOOLTIP);
  badges.append(stillTrains, topFrozen);
  if (node.is_shared) badges.append(badge("shared", "shared", SHARED_TOOLTIP));
  if (node.lora_rank) {
    const alpha = Number(node.lora_alpha);
    badges.append(badge("lora", `LoRA r${node.lora_rank} α${alpha}`,
      `LoRA adapter, rank ${node.lora_rank}, alpha ${alpha}: the kernel stays frozen, the ` +
      `adapters learn (alpha / rank) · a @ b. ${variablesText(node)}`));
  }
  const variables = variablesText(node);
  if (variables) params.setAttribute("title", `${params.getAttribute("title")}. Own: ${variables}`);

  let chip = null;
  if (chips && node.supports_lora) {
    chip = element("button", `fl-lora${node.lora_rank ? " on" : ""}`,
      node.lora_rank ? "− LoRA" : "+ LoRA");
    chip.setAttribute("type", "button");
    chip.setAttribute("data-path", node.path);
    chip.setAttribute("aria-label", `${node.lora_rank ? "remove" : "add"} LoRA on ${node.path}`);
    chip.setAttribute("title", node.lora_rank ? LORA_REMOVE_TOOLTIP : LORA_ADD_TOOLTIP);
  }
  row.append(caret, box, snow, name, cls, badges);
  if (chip) row.append(chip);
  row.append(params);
  return { row, caret: caret.tagName === "BUTTON" ? caret : null, box, stillTrains, topFrozen };
}

function rebuild(controller) {
  const { model, list } = controller;
  const fragment = document.createDocumentFragment();
  controller.rows = model.nodes.map((node, i) => {
    const parts = buildRow(node, i, model, model.loraChips);
    fragment.appendChild(parts.row);
    return parts;
  });
  if (model.nodes.length === 0) {
    fragment.appendChild(element("div", "fl-empty", "No layers to show."));
  }
  const noMatch = element("div", "fl-empty fl-no-match", "No layer matches the search.");
  noMatch.hidden = true;
  fragment.appendChild(noMatch);
  controller.noMatch = noMatch;
  list.replaceChildren(fragment);
}

function visibility(model, memory) {
  const count = model.nodes.length;
  const visible = new Uint8Array(count);
  const match = new Uint8Array(count); // bit 1: name matches, bit 2: class name matches
  const query = memory.search.trim().toLowerCase();
  if (query) {
    for (let i = 0; i < count; i += 1) {
      const node = model.nodes[i];
      const nameHit = String(node.name ?? "").toLowerCase().includes(query);
      const classHit = String(node.class_name ?? "").toLowerCase().includes(query);
      if (nameHit || classHit) {
        match[i] = (nameHit ? 1 : 0) | (classHit ? 2 : 0);
        for (let p = i; p >= 0 && !visible[p]; p = model.parent[p]) visible[p] = 1;
      }
    }
    return { visible, match, searching: true };
  }
  // Pre-order walk: a collapsed node hides its whole subtree, [i + 1, end[i]).
  for (let i = 0; i < count; ) {
    visible[i] = 1;
    i = hasChildren(model, i) && !isExpanded(model, memory, i) ? model.end[i] : i + 1;
  }
  return { visible, match, searching: false };
}

function update(controller) {
  const { model, memory, rows } = controller;
  const flags = derive(model);
  const { visible, match, searching } = visibility(model, memory);
  let shown = 0;
  for (let i = 0; i < rows.length; i += 1) {
    const { row, caret, box, stillTrains, topFrozen } = rows[i];
    const f = flags[i];
    box.checked = model.frozen[i];
    box.indeterminate = f.mixed;
    row.classList.toggle("frozen", !f.effective);
    row.classList.toggle("match-name", (match[i] & 1) === 1);
    row.classList.toggle("match-class", (match[i] & 2) === 2);
    row.hidden = visible[i] !== 1;
    shown += visible[i];
    stillTrains.hidden = !(f.ancestorFrozen && f.effective);
    topFrozen.hidden = !(f.ancestorFrozen && !f.effective);
    if (caret) {
      // While searching, the ancestors of matches are shown open.
      const open = searching ? visible[i] === 1 && hasVisibleChild(model, visible, i)
        : isExpanded(model, memory, i);
      caret.setAttribute("aria-expanded", open ? "true" : "false");
    }
  }
  controller.noMatch.hidden = !(searching && shown === 0);
  const frozenCount = model.frozen.filter(Boolean).length;
  const total = model.nodes.length;
  const counts = totals(model, flags);
  controller.summary.textContent =
    `${total} layers, ${frozenCount} frozen · ${counts.trainable.toLocaleString("en-US")} of ` +
    `${counts.total.toLocaleString("en-US")} parameters trainable`;
  controller.summary.dataset.trainable = String(counts.trainable);
  controller.summary.dataset.nonTrainable = String(counts.total - counts.trainable);
}

// The model's totals for the (possibly just clicked) flags, as Keras counts them: a variable
// trains when its own layer's flag and the top model's flag are both True; moving statistics
// and a LoRA layer's kernel never do (`own_never_trains`). Each variable belongs to one node (shared ones to the first), so nothing counts
// twice. The server's exact totals replace these after the rerun, and a test checks they agree.
function totals(model, flags) {
  let trainable = 0;
  let total = 0;
  model.nodes.forEach((node, i) => {
    const own = Number(node.own_params) || 0;
    total += own;
    const never = Number(node.own_never_trains ?? node.own_state_params) || 0;
    if (flags[i].effective) trainable += own - never;
  });
  return { trainable, total };
}

function hasVisibleChild(model, visible, i) {
  for (let j = i + 1; j < model.end[i]; j += 1) if (visible[j]) return true;
  return false;
}

export default function (component) {
  const { data, setStateValue, parentElement } = component;
  if (!parentElement) return undefined;
  const root = parentElement.querySelector(".fl-tree") ?? createRoot(parentElement);
  const controller = CONTROLLERS.get(root) ?? setUp(root);

  const focusedPath = focusedCheckboxPath(parentElement);
  const scrollTop = controller.list.scrollTop;

  controller.setStateValue = typeof setStateValue === "function" ? setStateValue : () => {};
  controller.setTriggerValue =
    typeof component.setTriggerValue === "function" ? component.setTriggerValue : () => {};
  controller.model = buildModel(data);
  controller.memory = memoryFor(controller.model.id);
  if (controller.search.value !== controller.memory.search) {
    controller.search.value = controller.memory.search;
  }
  rebuild(controller);
  update(controller);

  controller.list.scrollTop = scrollTop;
  if (focusedPath !== null) {
    const box = controller.rows.find((r) => r.box.getAttribute("data-path") === focusedPath);
    if (box) box.box.focus();
  }
  return undefined;
}

function focusedCheckboxPath(parentElement) {
  const active = parentElement.activeElement ?? document.activeElement;
  if (active instanceof HTMLInputElement && active.type === "checkbox") {
    return active.getAttribute("data-path");
  }
  return null;
}
