/**
 * The console's page: a shell that loads the bundle (src/ui/web, built into
 * dist/ui by scripts/build-ui.mjs). Everything it needs is served by
 * `bastion ui` itself: it works on an air-gapped host.
 */
export function renderPage(): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Bastion console</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/console.css">
<script type="module" src="/assets/console.js"></script>
</head>
<body>
<div id="app"><p class="boot">Loading the Bastion console…</p></div>
<noscript>The Bastion console needs JavaScript.</noscript>
</body>
</html>
`;
}
