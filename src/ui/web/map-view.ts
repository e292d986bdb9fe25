/**
 * The map on screen: cytoscape (canvas, compound nodes for the groups) laid
 * out with fCoSE (cytoscape-fcose), fed with the plain elements of
 * src/ui/model/map-model.ts. sync() touches only what changed, so live
 * traffic on a map of a thousand containers costs the few edges it changes.
 *
 * Focus shows one container with its neighbours (policy and traffic) alone,
 * laid out again; unfocus puts the whole map back where it was.
 */
import cytoscape, { type Core, type ElementDefinition, type NodeSingular, type Position, type StylesheetJson } from 'cytoscape';
import fcose from 'cytoscape-fcose';
import type { MapEdge, MapElements, MapNode } from '../model/map-model.js';

cytoscape.use(fcose);

/** Beyond this many containers the first layout is fCoSE's draft (spectral, no force iterations): seconds saved, groups still apart. */
const DRAFT_ABOVE = 300;
/** Beyond this many edges, edges are straight, unlabelled and hidden while panning. */
const LIGHT_EDGES_ABOVE = 1500;

const STYLE: StylesheetJson = [
  {
    selector: 'node',
    style: {
      label: 'data(label)',
      color: '#c9d1d9',
      'font-size': 11,
      'font-family': 'DejaVu Sans, system-ui, sans-serif',
      'text-valign': 'bottom',
      'text-margin-y': 4,
      'min-zoomed-font-size': 7,
      width: 26,
      height: 26,
    },
  },
  {
    selector: 'node.endpoint',
    style: { shape: 'round-rectangle', 'background-color': '#1f6feb', 'border-color': '#58a6ff', 'border-width': 1.5 },
  },
  { selector: 'node.remote', style: { 'background-color': '#6e40c9', 'border-color': '#a371f7' } },
  { selector: 'node.unknown', style: { 'background-color': '#484f58', 'border-style': 'dashed' } },
  { selector: 'node.audit-mode', style: { 'border-color': '#e3b341', 'border-width': 3, 'border-style': 'dashed' } },
  { selector: 'node.findings', style: { 'background-color': '#9e6a03' } },
  { selector: 'node.stack-missing', style: { 'background-color': '#da3633', 'border-color': '#ff7b72', 'border-width': 3 } },
  {
    selector: 'node.attacked',
    style: { 'underlay-color': '#f85149', 'underlay-opacity': 0.45, 'underlay-padding': 8, 'underlay-shape': 'ellipse', 'border-color': '#ff7b72', 'border-width': 3 },
  },
  { selector: 'node.attacker', style: { shape: 'diamond', 'background-color': '#bd561d', 'border-color': '#f0883e', 'border-width': 2 } },
  {
    selector: 'node.external',
    style: { shape: 'hexagon', 'background-color': '#30363d', 'border-color': '#8b949e', 'border-width': 1.5, width: 30, height: 30 },
  },
  { selector: 'node.world', style: { shape: 'ellipse' } },
  { selector: 'node.cidr', style: { shape: 'tag' } },
  {
    selector: 'node.network, node.host-group',
    style: {
      shape: 'round-rectangle',
      'background-color': '#161b22',
      'background-opacity': 0.9,
      'border-color': '#30363d',
      'border-width': 1,
      'text-valign': 'top',
      'text-halign': 'center',
      'text-margin-y': -4,
      'font-size': 12,
      color: '#8b949e',
      padding: '18px',
    },
  },
  { selector: 'node.host-group', style: { 'background-color': '#0d1117', 'border-color': '#6e7681', 'border-style': 'dashed' } },
  { selector: 'node.picked', style: { 'outline-color': '#a371f7', 'outline-width': 4, 'outline-offset': 3, 'outline-opacity': 1 } },
  { selector: 'node:selected', style: { 'border-color': '#ffffff', 'border-width': 3 } },
  { selector: 'node.focus', style: { width: 38, height: 38, 'font-size': 14, 'font-weight': 'bold' } },
  { selector: '.match', style: { 'underlay-color': '#58a6ff', 'underlay-opacity': 0.5, 'underlay-padding': 10 } },
  {
    selector: 'edge',
    style: {
      width: 1.5,
      'curve-style': 'bezier',
      'target-arrow-shape': 'triangle',
      'arrow-scale': 0.8,
      label: 'data(label)',
      'font-size': 9,
      color: '#8b949e',
      'text-rotation': 'autorotate',
      'text-background-color': '#0d1117',
      'text-background-opacity': 0.8,
      'text-background-padding': '1px',
      'min-zoomed-font-size': 8,
    },
  },
  { selector: 'edge.policy.unused', style: { 'line-color': '#6e7681', 'target-arrow-color': '#6e7681', 'line-style': 'dashed', 'line-dash-pattern': [6, 4] } },
  { selector: 'edge.policy.used', style: { 'line-color': '#3fb950', 'target-arrow-color': '#3fb950', width: 'mapData(count, 1, 200, 2, 6)', color: '#7ee787' } },
  { selector: 'edge.allowed-unlisted', style: { 'line-color': '#3fb950', 'target-arrow-color': '#3fb950', 'line-style': 'dotted', width: 2 } },
  { selector: 'edge.dropped', style: { 'line-color': '#f85149', 'target-arrow-color': '#f85149', width: 'mapData(count, 1, 200, 2.5, 7)', color: '#ff7b72' } },
  { selector: 'edge.audit', style: { 'line-color': '#d29922', 'target-arrow-color': '#d29922', 'line-style': 'dashed', width: 2.5, color: '#e3b341' } },
  { selector: 'edge.light', style: { 'curve-style': 'haystack', 'haystack-radius': 0, label: '', 'target-arrow-shape': 'none', opacity: 0.6 } },
  { selector: 'edge.light.dropped, edge.light.audit', style: { opacity: 1 } },
  { selector: '.hidden', style: { display: 'none' } },
  { selector: '.faded', style: { opacity: 0.12 } },
];

export interface MapHandlers {
  /** a container was clicked (undefined: the background) */
  onSelect(name: string | undefined): void;
  /** a container was shift-clicked: add it to (or take it from) the picked set */
  onPick(name: string): void;
}

function nodeDef(n: MapNode): ElementDefinition {
  return {
    group: 'nodes',
    data: { id: n.id, label: n.label, kind: n.kind, ...(n.name ? { name: n.name } : {}), ...(n.parent ? { parent: n.parent } : {}) },
    classes: n.classes,
  };
}

function edgeDef(e: MapEdge, light: boolean): ElementDefinition {
  return {
    group: 'edges',
    data: { id: e.id, source: e.source, target: e.target, label: e.label, kind: e.kind, count: e.count, ports: e.ports.join(' '), rules: (e.rules ?? []).join(' ') },
    classes: light ? [...e.classes, 'light'] : e.classes,
  };
}

const sigOf = (d: ElementDefinition) => JSON.stringify([d.data, d.classes]);
const nextFrame = () => new Promise<void>((r) => requestAnimationFrame(() => r()));

export class MapView {
  readonly cy: Core;
  private readonly sigs = new Map<string, string>();
  private laidOut = false;
  private focusedName?: string;
  private saved?: Map<string, Position>;
  private light = false;
  private layoutRun: Promise<void> = Promise.resolve();

  constructor(
    readonly el: HTMLElement,
    handlers: MapHandlers,
  ) {
    this.cy = cytoscape({
      container: el,
      style: STYLE,
      minZoom: 0.02,
      maxZoom: 4,
      boxSelectionEnabled: false,
      selectionType: 'single',
    });
    this.cy.on('tap', 'node.endpoint', (ev) => {
      const name = (ev.target as NodeSingular).data('name') as string;
      if ((ev.originalEvent as MouseEvent | undefined)?.shiftKey) handlers.onPick(name);
      else handlers.onSelect(name);
    });
    this.cy.on('tap', (ev) => {
      if (ev.target === this.cy) handlers.onSelect(undefined);
    });
  }

  get focused(): string | undefined {
    return this.focusedName;
  }

  /** Brings the map to these elements; lays it out when containers came or went. Resolves once drawn. */
  async sync(m: MapElements): Promise<{ added: number; removed: number }> {
    const cy = this.cy;
    const light = m.edges.length > LIGHT_EDGES_ABOVE;
    const lightChanged = light !== this.light;
    this.light = light;
    let added = 0;
    let removed = 0;
    const seen = new Set<string>();
    cy.batch(() => {
      const put = (def: ElementDefinition) => {
        const id = def.data.id!;
        seen.add(id);
        const sig = sigOf(def);
        if (!lightChanged && this.sigs.get(id) === sig) return;
        this.sigs.set(id, sig);
        const ele = cy.getElementById(id);
        if (ele.empty()) {
          cy.add(def);
          if (def.group === 'nodes') added++;
          return;
        }
        if (def.group === 'nodes' && (ele.data('parent') ?? undefined) !== def.data.parent) {
          ele.move({ parent: def.data.parent ?? null });
        }
        ele.data(def.data);
        const keep = ['hidden', 'faded', 'picked', 'focus', 'match'].filter((c) => ele.hasClass(c));
        ele.classes([...(def.classes as string[]), ...keep]);
      };
      for (const n of m.nodes) put(nodeDef(n));
      for (const e of m.edges) put(edgeDef(e, light));
      cy.elements().forEach((ele) => {
        if (seen.has(ele.id())) return;
        if (ele.isNode()) removed++;
        this.sigs.delete(ele.id());
        cy.remove(ele);
      });
      if (this.focusedName) this.applyFocusClasses(this.focusedName);
    });
    if (added || removed || !this.laidOut) await this.layout();
    await nextFrame();
    return { added, removed };
  }

  /** The whole map, laid out again (fCoSE; groups kept apart). */
  layout(): Promise<void> {
    this.layoutRun = this.layoutRun.then(async () => {
      if (this.focusedName) return; // the focus view has its own layout; the full one runs on unfocus
      const endpoints = this.cy.nodes('.endpoint').length;
      await this.runLayout(this.cy.elements(), {
        quality: endpoints > DRAFT_ABOVE ? 'draft' : 'default',
        randomize: true,
      });
      this.laidOut = true;
      this.fit();
    });
    return this.layoutRun;
  }

  private runLayout(eles: cytoscape.Collection, o: { quality: 'draft' | 'default' | 'proof'; randomize: boolean }): Promise<void> {
    return new Promise((resolve) => {
      const layout = eles.layout({
        name: 'fcose',
        quality: o.quality,
        randomize: o.randomize,
        animate: false,
        fit: false,
        nodeDimensionsIncludeLabels: true,
        packComponents: true,
        nodeRepulsion: () => 9000,
        idealEdgeLength: () => 90,
        nodeSeparation: 90,
        tile: true,
        tilingPaddingVertical: 20,
        tilingPaddingHorizontal: 20,
      } as cytoscape.LayoutOptions);
      layout.one('layoutstop', () => resolve());
      layout.run();
    });
  }

  private neighbourhood(name: string): cytoscape.Collection {
    const node = this.cy.getElementById(`e:${name}`);
    const nb = node.closedNeighborhood();
    return nb.union(nb.nodes().ancestors());
  }

  private applyFocusClasses(name: string): void {
    const keep = this.neighbourhood(name);
    this.cy.elements().addClass('hidden');
    keep.removeClass('hidden');
    this.cy.nodes('.focus').removeClass('focus');
    this.cy.getElementById(`e:${name}`).addClass('focus');
  }

  /** One container and its neighbours alone, laid out; resolves once drawn. */
  async focus(name: string): Promise<boolean> {
    const node = this.cy.getElementById(`e:${name}`);
    if (node.empty()) return false;
    await this.layoutRun;
    if (!this.saved) this.saved = new Map(this.cy.nodes().map((n) => [n.id(), { ...n.position() }]));
    this.focusedName = name;
    this.cy.batch(() => this.applyFocusClasses(name));
    const shown = this.neighbourhood(name);
    await this.runLayout(shown, { quality: 'default', randomize: true });
    this.fit(shown);
    this.select(name);
    await nextFrame();
    this.el.dataset.focused = name;
    return true;
  }

  async unfocus(): Promise<void> {
    if (!this.focusedName) return;
    this.focusedName = undefined;
    delete this.el.dataset.focused;
    const saved = this.saved;
    this.saved = undefined;
    this.cy.batch(() => {
      this.cy.elements().removeClass('hidden');
      this.cy.nodes('.focus').removeClass('focus');
      // children first: a group's position follows its children
      if (saved) this.cy.nodes().forEach((n) => void (n.isParent() ? undefined : saved.has(n.id()) && n.position(saved.get(n.id())!)));
    });
    const missing = this.cy.nodes().filter((n) => !n.isParent() && !saved?.has(n.id())).nonempty();
    if (missing) await this.layout();
    else this.fit();
    await nextFrame();
  }

  select(name: string | undefined): void {
    this.cy.$(':selected').unselect();
    if (name) this.cy.getElementById(`e:${name}`).select();
  }

  setPicked(names: ReadonlySet<string>): void {
    this.cy.batch(() => {
      this.cy.nodes('.picked').forEach((n) => void (names.has(n.data('name')) || n.removeClass('picked')));
      for (const name of names) this.cy.getElementById(`e:${name}`).addClass('picked');
    });
  }

  /** Marks the matches of a search (and centres on them when few). */
  highlight(names: readonly string[]): void {
    this.cy.batch(() => {
      this.cy.elements('.match').removeClass('match');
      for (const n of names) this.cy.getElementById(`e:${n}`).addClass('match');
    });
  }

  /** Fits what is shown (or `eles`), never closer than 1.5× (a few containers would fill the screen). */
  fit(eles?: cytoscape.Collection): void {
    const shown = eles ?? this.cy.elements(':visible');
    this.cy.fit(shown, 40);
    if (this.cy.zoom() > 1.5) {
      this.cy.zoom(1.5);
      this.cy.center(shown);
    }
  }
}
