"use strict";
(function () {
  const data = JSON.parse(document.getElementById("gallery-data").textContent);
  const S = data.strings, R = data.records, BASE = data.base, THUMBS = data.thumbs;
  // Record fields (see gallery.py): id, ext, thumb, width, height, prompt, negative,
  // user, baseModel, createdAt, stats [hearts, likes, laughs, cries, comments, dislikes], hasMeta
  const ID = 0, EXT = 1, TH = 2, W = 3, HT = 4, P = 5, NG = 6, U = 7, BM = 8, C = 9, ST = 10, M = 11;
  const VIDEO = new Set(["mp4", "webm"]);
  const SVGNS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const filterInput = $("filter"), sortSelect = $("sort"), sizeSelect = $("pagesize"), grid = $("grid");
  const nf = new Intl.NumberFormat();

  const state = { q: "", sort: "newest", page: 1, size: data.pageSize || 200 };
  let hay = null;          // lower-cased search text per record, built on first filter
  const orders = new Map(); // sort key -> record indices in that order
  let view = [];            // indices of the records shown, in order

  function src(r) { return BASE + r[ID] + "." + r[EXT]; }
  function thumbSrc(r) { return r[TH] ? BASE + "thumbs/" + THUMBS[r[TH] - 1] + "/" + r[ID] + ".jpg" : src(r); }
  function total(st) { return st[0] + st[1] + st[2] + st[3]; }

  function sortKey(name) {
    // Unknown reactions (no item) sort after every known count.
    const stat = (i) => (r) => (r[ST] ? r[ST][i] : -1);
    switch (name) {
      case "hearts": return stat(0);
      case "likes": return stat(1);
      case "comments": return stat(4);
      case "total": return (r) => (r[ST] ? total(r[ST]) : -1);
      default: return null;
    }
  }

  function order(name) {
    let o = orders.get(name);
    if (o) return o;
    o = Array.from(R.keys());
    const key = sortKey(name);
    if (key) {
      const k = R.map(key);
      o.sort((a, b) => k[b] - k[a] || R[b][ID] - R[a][ID]);
    } else if (name === "newest" || name === "oldest") {
      // createdAt (ISO 8601, compared as text), then a higher id is newer.
      // Records without a date sort as the oldest.
      const sign = name === "newest" ? 1 : -1;
      o.sort((a, b) => {
        const ca = R[a][C], cb = R[b][C];
        return sign * ((ca < cb ? 1 : ca > cb ? -1 : 0) || R[b][ID] - R[a][ID]);
      });
    } else {
      o.sort((a, b) => R[a][ID] - R[b][ID]);
    }
    orders.set(name, o);
    return o;
  }

  function haystack() {
    if (!hay) hay = R.map((r) => (r[ID] + "\n" + S[r[P]] + "\n" + S[r[NG]] + "\n" + S[r[U]] + "\n" + S[r[BM]]).toLowerCase());
    return hay;
  }

  function recompute() {
    const o = order(state.sort);
    const terms = state.q.toLowerCase().split(/\s+/).filter(Boolean);
    if (!terms.length) { view = o; return; }
    const h = haystack();
    view = o.filter((i) => { const t = h[i]; for (const term of terms) if (!t.includes(term)) return false; return true; });
  }

  function pages() { return Math.max(1, Math.ceil(view.length / state.size)); }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function link(href, text) {
    const a = el("a", null, text);
    a.href = href; a.target = "_blank"; a.rel = "noopener noreferrer";
    return a;
  }

  function stat(cls, icon, n, label) {
    const s = el("span", "stat " + cls);
    s.title = nf.format(n) + " " + label;
    const svg = document.createElementNS(SVGNS, "svg");
    const use = document.createElementNS(SVGNS, "use");
    use.setAttribute("href", "#i-" + icon);
    svg.appendChild(use);
    s.append(svg, nf.format(n));
    return s;
  }

  function card(r) {
    const c = el("article", "card");
    c.dataset.id = r[ID];
    const isVideo = VIDEO.has(r[EXT].toLowerCase());
    const media = link(src(r));
    media.className = "media";
    if (isVideo) {
      const v = document.createElement("video");
      v.muted = true; v.loop = true; v.playsInline = true; v.preload = "metadata";
      if (r[W] && r[HT]) { v.width = r[W]; v.height = r[HT]; }
      v.dataset.src = src(r);
      lazyVideos.observe(v);
      c.addEventListener("mouseenter", () => { if (v.src) v.play().catch(() => {}); });
      c.addEventListener("mouseleave", () => v.pause());
      media.append(v, el("span", "badge", "VIDEO"));
    } else {
      const img = document.createElement("img");
      img.loading = "lazy"; img.decoding = "async";
      if (r[W] && r[HT]) { img.width = r[W]; img.height = r[HT]; }
      img.alt = "image " + r[ID];
      img.src = thumbSrc(r);
      media.append(img);
    }
    c.append(media);

    const body = el("div", "body");
    const stats = el("div", "stats");
    const st = r[ST];
    if (st) {
      stats.append(stat("heart", "heart", st[0], "hearts"), stat("like", "like", st[1], "likes"),
        stat("laugh", "laugh", st[2], "laughs"), stat("cry", "cry", st[3], "cries"),
        stat("comment", "comment", st[4], "comments"));
      stats.title = nf.format(total(st)) + " reactions, " + nf.format(st[5]) + " dislikes";
    } else {
      stats.append(el("span", "unknown", "reactions unknown"));
    }
    body.append(stats);

    const prompt = S[r[P]], neg = S[r[NG]];
    const p = el("p", prompt ? "prompt" : "prompt none", prompt || "no prompt");
    if (prompt || neg) {
      p.title = prompt + (neg ? "\n\nNegative: " + neg : "");
      p.addEventListener("click", () => c.classList.toggle("open"));
    }
    body.append(p);
    if (neg) {
      const n = el("p", "neg");
      n.append(el("b", null, "Negative: "), neg);
      body.append(n);
    }

    const info = el("div", "info");
    info.append(el("span", "chip", r[W] && r[HT] ? r[W] + "×" + r[HT] : "size unknown"));
    if (S[r[BM]]) info.append(el("span", "chip", S[r[BM]]));
    if (S[r[U]]) info.append(el("span", "chip", "@" + S[r[U]]));
    if (r[C]) info.append(el("span", "chip", r[C].slice(0, 10)));
    body.append(info);

    const links = el("div", "links");
    links.append(link(src(r), isVideo ? "video" : "image"));
    if (r[M]) links.append(link(BASE + r[ID] + "_meta.json", "meta"));
    links.append(link("https://civitai.com/images/" + r[ID], "civitai"));
    links.append(el("span", "id", "#" + r[ID]));
    body.append(links);
    c.append(body);
    return c;
  }

  const lazyVideos = "IntersectionObserver" in window
    ? new IntersectionObserver((entries) => {
        for (const e of entries) if (e.isIntersecting) { e.target.src = e.target.dataset.src; lazyVideos.unobserve(e.target); }
      }, { rootMargin: "300px" })
    : { observe: (v) => { v.src = v.dataset.src; }, disconnect() {} };

  function pager(nav) {
    const n = pages();
    nav.hidden = n === 1;
    const btn = (label, page, title) => {
      const b = el("button", null, label);
      b.type = "button"; b.title = title;
      b.disabled = page < 1 || page > n || page === state.page;
      b.addEventListener("click", () => go(page));
      return b;
    };
    const count = el("span", "count", "Page " + nf.format(state.page) + " / " + nf.format(n));
    nav.replaceChildren(btn("«", 1, "First page"), btn("‹ Prev", state.page - 1, "Previous page"), count,
      btn("Next ›", state.page + 1, "Next page"), btn("»", n, "Last page"));
  }

  function render() {
    state.page = Math.min(Math.max(1, state.page), pages());
    lazyVideos.disconnect();
    const start = (state.page - 1) * state.size;
    const frag = document.createDocumentFragment();
    for (const i of view.slice(start, start + state.size)) frag.appendChild(card(R[i]));
    grid.replaceChildren(frag);
    grid.dataset.query = state.q;
    $("empty").style.display = view.length ? "none" : "block";
    pager($("pager-top")); pager($("pager-bottom"));
    const shown = view.length === R.length ? nf.format(R.length) + " images"
      : nf.format(view.length) + " of " + nf.format(R.length) + " images match";
    let summary = shown;
    if (data.withItems < R.length) summary += " · reactions known for " + nf.format(data.withItems);
    if (data.failures) summary += " · " + nf.format(data.failures) + " failures recorded";
    $("summary").textContent = summary;
    saveHash();
  }

  function go(page) { state.page = page; render(); window.scrollTo(0, 0); }

  function saveHash() {
    const p = new URLSearchParams();
    if (state.q) p.set("q", state.q);
    if (state.sort !== "newest") p.set("sort", state.sort);
    if (state.size !== (data.pageSize || 200)) p.set("size", state.size);
    if (state.page > 1) p.set("page", state.page);
    const h = p.toString();
    try { history.replaceState(null, "", h ? "#" + h : location.pathname + location.search); } catch (e) { /* file:// may refuse */ }
  }

  function loadHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    state.q = p.get("q") || "";
    const sort = p.get("sort");
    if (sort && [...sortSelect.options].some((o) => o.value === sort)) state.sort = sort;
    const size = parseInt(p.get("size"), 10);
    if (size > 0 && size <= 1000) state.size = size;
    state.page = parseInt(p.get("page"), 10) || 1;
  }

  loadHash();
  if (![...sizeSelect.options].some((o) => +o.value === state.size)) {
    const o = el("option", null, state.size + " / page"); o.value = state.size; sizeSelect.append(o);
  }
  filterInput.value = state.q; sortSelect.value = state.sort; sizeSelect.value = String(state.size);
  recompute(); render();

  let timer = 0;
  filterInput.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => { state.q = filterInput.value.trim(); state.page = 1; recompute(); render(); }, R.length > 20000 ? 200 : 60);
  });
  sortSelect.addEventListener("change", () => { state.sort = sortSelect.value; state.page = 1; recompute(); render(); });
  sizeSelect.addEventListener("change", () => { state.size = +sizeSelect.value; state.page = 1; render(); });
  document.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement || e.altKey || e.ctrlKey || e.metaKey) return;
    if (e.key === "ArrowRight" && state.page < pages()) go(state.page + 1);
    else if (e.key === "ArrowLeft" && state.page > 1) go(state.page - 1);
  });
  document.documentElement.dataset.ready = "1";
})();
