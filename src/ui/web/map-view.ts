/**
 * The map on screen: cytoscape (canvas, compound nodes for the groups) laid
 * out with fCoSE (cytoscape-fcose), fed with the plain elements of
 * src/ui/model/map-model.ts. sync() touches only what changed, so live
 * traffic on a map of a thousand containers costs the few edges it changes.
 *
 * Focus shows one container with its neighbours (policy and traffic) alone,
 * in a second, small instance laid out on its own: the main map is not
 * touched (at 1,000 containers, hiding everything else cost 1.5-2 s of style
 * work), so going back is immediate.
 */
import cytoscape, { type Core, type ElementDefinition, type NodeSingular, type StylesheetJson } from 'cytoscape';
import fcose from 'cytoscape-fcose';
import type { MapEdge, MapElements, MapNode } from '../model/map-model.js';

cytoscape.use(fcose);

/** Beyond this many containers the map is laid out by group (layoutByGroup). */
const BY_GROUP_ABOVE = 300;
/** Up to this many new nodes on a laid-out map are placed beside their neighbours; more, and the map is laid out again. */
const PLACE_AT_MOST = 20;
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
      // a group of a hundred containers is seen from afar: its name grows with it
      'font-size': 'mapData(members, 1, 100, 12, 64)',
      'min-zoomed-font-size': 5,
      color: '#8b949e',
      padding: '18px',
    },
  },
  { selector: 'node.network.near, node.host-group.near', style: { 'font-size': 13 } },
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
    data: {
      id: n.id,
      label: n.label,
      kind: n.kind,
      ...(n.name ? { name: n.name } : {}),
      ...(n.parent ? { parent: n.parent } : {}),
      ...(n.members !== undefined ? { members: n.members } : {}),
    },
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
  private light = false;
  private layoutRun: Promise<void> = Promise.resolve();
  /** how long the last steps took (ms), for the scale test and the curious */
  readonly stats = { layoutMs: 0, elementsMs: 0, layouts: 0 };

  /** the focus view: a second, small instance over the main one (the main map is not touched, so going back costs nothing) */
  private focusCy?: Core;
  private readonly focusEl: HTMLDivElement;

  constructor(
    readonly el: HTMLElement,
    private readonly handlers: MapHandlers,
  ) {
    this.cy = this.instance(el);
    this.focusEl = document.createElement('div');
    this.focusEl.className = 'focus-map';
    this.focusEl.hidden = true;
    el.parentElement!.appendChild(this.focusEl);
  }

  private instance(container: HTMLElement): Core {
    const cy = cytoscape({ container, style: STYLE, minZoom: 0.02, maxZoom: 4, boxSelectionEnabled: false, selectionType: 'single' });
    cy.on('tap', 'node.endpoint', (ev) => {
      const name = (ev.target as NodeSingular).data('name') as string;
      if ((ev.originalEvent as MouseEvent | undefined)?.shiftKey) this.handlers.onPick(name);
      else this.handlers.onSelect(name);
    });
    cy.on('tap', (ev) => {
      if (ev.target === cy) this.handlers.onSelect(undefined);
    });
    return cy;
  }

  /** The instance on screen: the focus view's, or the main map. */
  get shown(): Core {
    return this.focusCy ?? this.cy;
  }

  /** Names of the containers on screen. */
  visibleNames(): string[] {
    return this.shown
      .nodes('.endpoint')
      .filter((n) => n.visible())
      .map((n) => n.data('name') as string);
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
    const newIds: string[] = [];
    const seen = new Set<string>();
    const t0 = performance.now();
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
          if (def.group === 'nodes') {
            added++;
            newIds.push(id);
          }
          return;
        }
        if (def.group === 'nodes' && (ele.data('parent') ?? undefined) !== def.data.parent) {
          ele.move({ parent: def.data.parent ?? null });
        }
        ele.data(def.data);
        const keep = ['picked', 'match'].filter((c) => ele.hasClass(c));
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
    });
    this.stats.elementsMs = performance.now() - t0;
    if (this.focusedName) this.refreshFocus();
    if (!this.laidOut || added > PLACE_AT_MOST || (added && !this.placeNew(newIds))) await this.layout();
    await nextFrame();
    return { added, removed };
  }

  /**
   * The whole map, laid out again. Up to BY_GROUP_ABOVE containers: one fCoSE
   * run over everything (compound groups included). Beyond: by group (see
   * layoutByGroup), since one run over a thousand containers takes 5-9 s
   * in good quality and overlaps the groups in draft quality (measured at
   * 1,000 containers on 10 bridges, 2,100 dependencies).
   */
  layout(): Promise<void> {
    this.layoutRun = this.layoutRun.then(async () => {
      const endpoints = this.cy.nodes('.endpoint').length;
      const t0 = performance.now();
      if (endpoints > BY_GROUP_ABOVE) await this.layoutByGroup();
      else await this.runLayout(this.cy.elements(), { quality: 'default', randomize: true });
      this.stats.layoutMs = performance.now() - t0;
      this.stats.layouts++;
      this.laidOut = true;
      this.fit();
    });
    return this.layoutRun;
  }

  /**
   * Two levels, both by the library: inside each network, fCoSE (draft:
   * spectral) over its containers and the edges between them; then the
   * groups, as boxes of their size, placed by cytoscape's grid layout
   * (without overlap) in a headless instance, and moved there whole. Cluster
   * mode adds a level: networks inside their host's box, hosts on the map.
   */
  private async layoutByGroup(): Promise<void> {
    const cy = this.cy;
    for (const net of cy.nodes('.network').toArray()) {
      const kids = net.children();
      if (kids.length > 1) await this.runLayout(kids.union(kids.edgesWith(kids)), { quality: 'draft', randomize: true, pack: false, labels: false });
    }
    for (const host of cy.nodes('.host-group').toArray()) this.packBoxes(host.children());
    this.packBoxes(cy.nodes().orphans());
  }

  /** Places nodes (groups as boxes, loose nodes together as one box) on a grid without overlap, each moved whole. */
  private packBoxes(nodes: cytoscape.NodeCollection): void {
    const boxes: Array<{ id: string; members: cytoscape.NodeCollection }> = [];
    const loose = nodes.filter((n) => !n.isParent());
    if (loose.nonempty()) {
      // the host, the world, unknown addresses: a small grid of their own, beside the groups
      loose.layout({ name: 'grid', fit: false, avoidOverlap: true, avoidOverlapPadding: 40, boundingBox: { x1: 0, y1: 0, w: 160, h: 80 * loose.length } } as cytoscape.LayoutOptions).run();
      boxes.push({ id: 'loose', members: loose });
    }
    nodes
      .filter((n) => n.isParent())
      .forEach((g) => void boxes.push({ id: g.id(), members: g.descendants().filter((d) => !d.isParent()) }));
    if (boxes.length < 2 && !loose.nonempty()) return;
    const sized = boxes.map((b) => ({ ...b, bb: b.members.boundingBox({ includeLabels: true }) }));
    const meta = cytoscape({
      headless: true,
      styleEnabled: true,
      elements: sized.map((b) => ({ data: { id: b.id, w: b.bb.w + 80, h: b.bb.h + 80 } })),
      style: [{ selector: 'node', style: { width: 'data(w)', height: 'data(h)', shape: 'rectangle' } }],
    });
    meta.layout({ name: 'grid', fit: false, avoidOverlap: true, avoidOverlapPadding: 40, condense: true, sort: (a: NodeSingular, b: NodeSingular) => b.data('w') * b.data('h') - a.data('w') * a.data('h') } as cytoscape.LayoutOptions).run();
    for (const b of sized) {
      const to = meta.getElementById(b.id).position();
      b.members.shift({ x: to.x - (b.bb.x1 + b.bb.w / 2), y: to.y - (b.bb.y1 + b.bb.h / 2) });
    }
    meta.destroy();
  }

  /**
   * A few containers or ends came on a map already laid out: each is put
   * beside one of its neighbours (or in its group), without moving the rest
   * (a full layout of a thousand containers would redraw everything for one
   * new end). Returns false when it cannot, and a full layout is needed.
   */
  private placeNew(ids: string[]): boolean {
    const cy = this.cy;
    for (const id of ids) {
      const n = cy.getElementById(id);
      if (n.isParent()) return false; // a new group: lay out again
      const anchor = n
        .neighborhood()
        .nodes()
        .filter((x) => !ids.includes(x.id()) && !x.isParent())
        .first();
      const group = n.parent();
      const around = anchor.nonempty() ? (anchor as NodeSingular).position() : group.nonempty() && group.children().length > 1 ? group.children().not(n).boundingBox({}) : undefined;
      if (!around) return false;
      const c = 'x1' in around ? { x: around.x1 + around.w / 2, y: around.y1 + around.h / 2 } : around;
      const a = Math.random() * 2 * Math.PI;
      n.position({ x: c.x + 70 * Math.cos(a), y: c.y + 70 * Math.sin(a) });
    }
    return true;
  }

  private runLayout(eles: cytoscape.Collection, o: { quality: 'draft' | 'default' | 'proof'; randomize: boolean; pack?: boolean; labels?: boolean }): Promise<void> {
    return new Promise((resolve) => {
      const layout = eles.layout({
        name: 'fcose',
        quality: o.quality,
        randomize: o.randomize,
        animate: false,
        fit: false,
        nodeDimensionsIncludeLabels: o.labels ?? true,
        packComponents: o.pack ?? true,
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

  /** The focus view's elements: the container, its neighbours, their groups, every edge between them (full edges: arrows, labels). */
  private focusElements(name: string): ElementDefinition[] {
    return this.neighbourhood(name).map((e) => {
      const j = e.json() as ElementDefinition;
      const classes = (typeof j.classes === 'string' ? j.classes.split(' ') : (j.classes ?? [])).filter((c) => c && c !== 'light' && c !== 'match');
      if (e.isNode() && e.isParent()) classes.push('near'); // a group seen from near: its name at the normal size
      return { group: j.group, data: j.data, classes: e.id() === `e:${name}` ? [...classes, 'focus'] : classes };
    });
  }

  /** After a sync: the focus view follows the main map (new traffic edges, classes), laid out again only if its members changed. */
  private refreshFocus(): void {
    const fc = this.focusCy;
    const name = this.focusedName;
    if (!fc || !name) return;
    if (this.cy.getElementById(`e:${name}`).empty()) return void this.unfocus();
    const defs = this.focusElements(name);
    const ids = new Set(defs.map((d) => d.data.id!));
    const same = fc.elements().length === ids.size && fc.elements().filter((e) => !ids.has(e.id())).empty();
    fc.batch(() => {
      for (const d of defs) {
        const e = fc.getElementById(d.data.id!);
        if (e.empty()) fc.add(d);
        else {
          e.data(d.data);
          e.classes(d.classes as string[]);
        }
      }
      fc.elements().forEach((e) => void (ids.has(e.id()) || fc.remove(e)));
    });
    if (!same) void this.layoutFocus();
  }

  private async layoutFocus(): Promise<void> {
    const fc = this.focusCy;
    if (!fc) return;
    await new Promise<void>((resolve) => {
      const l = fc.elements().layout({ name: 'fcose', quality: 'proof', randomize: true, animate: false, fit: false, nodeDimensionsIncludeLabels: true, idealEdgeLength: () => 140, nodeRepulsion: () => 20000 } as cytoscape.LayoutOptions);
      l.one('layoutstop', () => resolve());
      l.run();
    });
    fc.fit(undefined, 50);
    if (fc.zoom() > 1.5) {
      fc.zoom(1.5);
      fc.center();
    }
  }

  /** One container and its neighbours alone, in a view of their own, laid out; resolves once drawn. */
  async focus(name: string): Promise<boolean> {
    if (this.cy.getElementById(`e:${name}`).empty()) return false;
    this.focusCy?.destroy();
    this.focusEl.hidden = false;
    this.el.style.visibility = 'hidden';
    this.focusedName = name;
    this.focusCy = this.instance(this.focusEl);
    this.focusCy.add(this.focusElements(name));
    await this.layoutFocus();
    this.select(name);
    await nextFrame();
    this.el.dataset.focused = name;
    return true;
  }

  /** Back to the whole map, as it was. */
  async unfocus(): Promise<void> {
    if (!this.focusedName) return;
    this.focusedName = undefined;
    this.focusCy?.destroy();
    this.focusCy = undefined;
    this.focusEl.hidden = true;
    this.el.style.visibility = '';
    delete this.el.dataset.focused;
    await nextFrame();
  }

  select(name: string | undefined): void {
    for (const cy of [this.cy, this.focusCy]) {
      if (!cy) continue;
      cy.$(':selected').unselect();
      if (name) cy.getElementById(`e:${name}`).select();
    }
  }

  setPicked(names: ReadonlySet<string>): void {
    for (const cy of [this.cy, this.focusCy]) {
      cy?.batch(() => {
        cy.nodes('.picked').forEach((n) => void (names.has(n.data('name')) || n.removeClass('picked')));
        for (const name of names) cy.getElementById(`e:${name}`).addClass('picked');
      });
    }
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
    const cy = this.shown;
    const shown = eles ?? cy.elements();
    cy.fit(shown, 40);
    if (cy.zoom() > 1.5) {
      cy.zoom(1.5);
      cy.center(shown);
    }
  }
}
