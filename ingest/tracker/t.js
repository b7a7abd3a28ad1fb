// Tally tracker: page views (including single-page apps), custom events with
// properties and revenue, opt-in outbound clicks, downloads and form
// submissions, engagement time and scroll depth, and a cookieless
// returning-visitor flag. Served minified by ingest at /t.js; the minified
// file is `t.min.js`, built from this one by `npm run build` (terser) in this
// directory. Installation is one tag:
//
//   <script defer src="https://tally.example/t.js" data-site="example.com"></script>
//
// Attributes (all optional):
//   data-site          site domain (default: the page's host without www.)
//   data-api           event endpoint (default: /api/event next to the script)
//   data-hash          hash-based routing: the #/route is sent as the path
//   data-track         "outbound downloads forms" (any of them)
//   data-no-returning  do not keep the first-seen marker in localStorage
//   data-local         also send from localhost and automated browsers
//
// Calls made before the script loads are queued by this stub:
//   <script>window.tally=window.tally||function(){(tally.q=tally.q||[]).push(arguments)}</script>
// Opt out in a browser with localStorage.tally_ignore = "true".
(function (w, d) {
  var script = d.currentScript;
  var loc = w.location;
  var nav = w.navigator;
  var attr = function (name) {
    return script && script.getAttribute(name);
  };
  var has = function (name) {
    return attr(name) != null;
  };
  var site = attr('data-site') || loc.hostname.replace(/^www\./, '');
  var api = attr('data-api') || new URL('/api/event', script ? script.src : loc.href).href;
  var hashMode = has('data-hash');
  var features = ' ' + (attr('data-track') || '') + ' ';
  var local = has('data-local');
  var lastKey;
  var pageUrl;
  var engaged = 0;
  var visibleSince = 0;
  var scrollMax = 0;

  function store(key, value) {
    try {
      var s = w.localStorage;
      if (value !== undefined) s[key] = value;
      return s[key];
    } catch (e) {}
  }

  function ignored() {
    if (store('tally_ignore') == 'true') return 1;
    if (local) return 0;
    return (
      /^(localhost|127(\.\d+){3}|\[::1\])$/.test(loc.hostname) ||
      loc.protocol == 'file:' ||
      nav.webdriver ||
      w.Cypress ||
      w._phantom ||
      w.__nightmare
    );
  }

  // 1 when this browser had been seen before the current visit started, 0
  // on a first visit, undefined when turned off or storage is unavailable.
  // A visit is 30 minutes without events, as on the server.
  function returning() {
    if (has('data-no-returning')) return;
    var now = Date.now();
    var first = +store('tally_f') || +store('tally_f', now);
    var last = +store('tally_l');
    var start = !last || now - last > 18e5 ? +store('tally_s', now) : +store('tally_s');
    store('tally_l', now);
    if (first) return first < start ? 1 : 0;
  }

  function send(body, beacon) {
    var json = JSON.stringify(body);
    if (beacon && nav.sendBeacon) {
      nav.sendBeacon(api, new Blob([json], { type: 'text/plain' }));
    } else if (w.fetch) {
      fetch(api, {
        method: 'POST',
        headers: { 'Content-Type': 'text/plain' },
        body: json,
        keepalive: true
      }).catch(function () {});
    }
  }

  // The page URL; with hash routing `/app#/settings` is sent as `/app/settings`.
  function url() {
    var hash = loc.hash.slice(1);
    if (!hashMode || !hash) return loc.href;
    return loc.origin + loc.pathname.replace(/\/$/, '') + (hash[0] == '/' ? '' : '/') + hash + loc.search;
  }

  function track(name, options) {
    if (ignored()) return;
    options = options || {};
    var body = { n: name, u: options.u || url(), d: site, r: d.referrer || null, ret: returning() };
    if (options.props) body.p = options.props;
    if (options.revenue) body.$ = options.revenue;
    if (options.interactive === false) body.i = false;
    send(body);
  }

  function scrolled() {
    var el = d.documentElement;
    var height = Math.max(el.scrollHeight, d.body ? d.body.scrollHeight : 0);
    var seen = ((w.scrollY + w.innerHeight) / (height || 1)) * 100;
    scrollMax = Math.max(scrollMax, Math.min(100, Math.round(seen)));
  }

  // Time the page was visible since the last report, and the deepest scroll;
  // `hidden`: the page is being hidden or left, so the clock stops.
  function engagement(hidden) {
    if (visibleSince) engaged += Date.now() - visibleSince;
    visibleSince = !hidden && d.visibilityState == 'visible' ? Date.now() : 0;
    if (pageUrl && engaged > 0 && !ignored()) {
      send({ n: 'engagement', u: pageUrl, d: site, e: engaged, sd: scrollMax }, 1);
    }
    engaged = 0;
  }

  function page() {
    var key = loc.pathname + (hashMode ? loc.hash : '');
    if (key == lastKey) return;
    if (lastKey) engagement();
    lastKey = key;
    pageUrl = url();
    scrollMax = 0;
    visibleSince = d.visibilityState == 'visible' ? Date.now() : 0;
    scrolled();
    track('pageview');
  }

  var history = w.history;
  ['pushState', 'replaceState'].forEach(function (method) {
    var original = history[method];
    if (original) {
      history[method] = function () {
        original.apply(this, arguments);
        page();
      };
    }
  });
  w.addEventListener('popstate', page);
  if (hashMode) w.addEventListener('hashchange', page);
  w.addEventListener('scroll', scrolled, { passive: true });
  d.addEventListener('visibilitychange', function () {
    if (d.visibilityState == 'hidden') engagement(1);
    else visibleSince = Date.now();
  });
  w.addEventListener('pagehide', function () {
    engagement(1);
  });

  var downloads = /\.(pdf|xlsx?|docx?|txt|rtf|csv|exe|key|pp[st]x?|7z|pkg|rar|gz|zip|avi|mov|mp[34]|wav|wma|wmv|dmg|iso|msi|epub|apk)$/i;
  d.addEventListener('click', function (event) {
    var link = event.target.closest && event.target.closest('a[href]');
    if (!link) return;
    var url = link.href;
    if (features.indexOf(' outbound ') >= 0 && link.host && link.host != loc.host) {
      track('Outbound Link: Click', { props: { url: url } });
    } else if (features.indexOf(' downloads ') >= 0 && downloads.test(link.pathname)) {
      track('File Download', { props: { url: url } });
    }
  }, true);
  d.addEventListener('submit', function (event) {
    var form = event.target;
    if (features.indexOf(' forms ') >= 0 && (!form.checkValidity || form.checkValidity())) {
      track('Form: Submission', { props: { path: loc.pathname } });
    }
  }, true);

  var queued = (w.tally && w.tally.q) || [];
  w.tally = track;
  page();
  for (var i = 0; i < queued.length; i++) track.apply(null, queued[i]);
})(window, document);
