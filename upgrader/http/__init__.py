"""HTTP answers, framework-neutral where they can be: the guard's pages and the web
server's static page, the maintenance switch that keeps that page current, the WSGI
protocol's mechanics, and what upgrader's own small Flask applications share. The
adapters users embed (upgrader.web) and the installer and console build on it."""
