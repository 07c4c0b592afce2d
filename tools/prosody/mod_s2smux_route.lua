-- mod_s2smux_route: send Prosody's outgoing server-to-server connections to
-- a fixed address (the s2smux gateway) instead of resolving DNS.
--
-- For Prosody 0.12 (tested with 0.12.3), no changes to Prosody itself.
-- Prosody 0.12 has no option for this (mod_s2sout_override needs 0.13+).
--
-- How it works: mod_s2s asks `require "net.resolvers.service".new(to_host,
-- "xmpp-server", "tcp", extra)` for a resolver on every new outgoing S2S
-- connection (and, when TLS is configured, first tries `"xmpps-server"` for
-- XEP-0368 direct TLS). This module replaces `service.new` so that, for a
-- routed domain:
--   * "xmpp-server"  -> exactly one target, the configured HOST:PORT
--                       (plain TCP; Prosody then negotiates STARTTLS, SASL
--                       EXTERNAL or dialback as usual on that connection);
--   * "xmpps-server" -> an empty resolver, so no direct-TLS attempt is made
--                       and no DNS query leaves the machine.
-- Domains that are not routed, and every other service name, go to the
-- original function. The original is restored when the module is unloaded.
--
-- Configuration (global section of prosody.cfg.lua):
--
--   modules_enabled = { ...; "dialback"; "s2smux_route"; }
--   plugin_paths = { "/path/to/s2smux/tools/prosody" }
--
--   -- All outbound S2S to the gateway's inner listener:
--   s2smux_gateway = "127.0.0.1:15269"     -- "HOST:PORT", "[V6]:PORT", "HOST" (port 5269)
--
--   -- Per-domain overrides (win over s2smux_gateway). Exact domains, or
--   -- "*.example" for every subdomain of example (not example itself);
--   -- the longest matching pattern wins. "*" alone matches every domain.
--   s2smux_routes = {
--       ["b.test"] = "127.0.0.1:6269";
--       ["*.c.test"] = "127.0.0.1:7269";
--   }
--
-- Fronted by s2smuxd, the local Prosody must also run with
--   s2s_secure_auth = false   -- inbound remote domains arrive from the gateway,
--                             -- authenticated with dialback (the gateway checks
--                             -- certificates and TLS policy outside)
--   "dialback" in modules_enabled
-- See tools/prosody/README.md.
--
-- Options are re-read on config reload. Every routing decision is logged at
-- info level: "Routing S2S for b.test to 127.0.0.1:6269 (s2smux_routes b.test)".

module:set_global();

local service = require "net.resolvers.service";
local basic = require "net.resolvers.basic";
local manual = require "net.resolvers.manual";

local original_new = service.new;
local gateway;      -- { host = , port = , text = } or nil
local exact = {};   -- domain -> target
local wildcards = {}; -- array of { suffix = ".c.test", target = , pattern = "*.c.test" }, longest first
local catch_all;    -- target for "*"

local function parse_target(value, what)
	if type(value) ~= "string" then
		module:log("error", "%s: expected a \"HOST:PORT\" string, got %s", what, type(value));
		return nil;
	end
	local host, port = value:match("^%[([^%]]+)%]:(%d+)$");
	if not host then
		host, port = value:match("^([^:]+):(%d+)$");
	end
	if not host then
		host = value:match("^%[([^%]]+)%]$") or value:match("^([^:]+)$");
		port = "5269";
	end
	port = tonumber(port);
	if not host or host == "" or not port or port < 1 or port > 65535 then
		module:log("error", "%s: invalid address %q (expected HOST:PORT)", what, value);
		return nil;
	end
	return { host = host, port = port, text = value };
end

local function load_config()
	gateway, exact, wildcards, catch_all = nil, {}, {}, nil;

	local gw = module:get_option("s2smux_gateway");
	if gw ~= nil then
		gateway = parse_target(gw, "s2smux_gateway");
	end

	local routes = module:get_option("s2smux_routes", {});
	if type(routes) ~= "table" then
		module:log("error", "s2smux_routes: expected a table of [\"domain\"] = \"HOST:PORT\"");
		routes = {};
	end
	local n = 0;
	for pattern, value in pairs(routes) do
		local target = parse_target(value, ("s2smux_routes[%q]"):format(tostring(pattern)));
		if target and type(pattern) == "string" then
			pattern = pattern:lower();
			if pattern == "*" then
				catch_all = target;
			elseif pattern:sub(1, 2) == "*." then
				table.insert(wildcards, { suffix = pattern:sub(2), target = target, pattern = pattern });
			else
				exact[pattern] = target;
			end
			n = n + 1;
		end
	end
	table.sort(wildcards, function (a, b) return #a.suffix > #b.suffix; end);

	module:log("info", "s2smux_gateway = %s, %d route(s) in s2smux_routes",
		gateway and gateway.text or "(none: unrouted domains use DNS)", n);
end

-- Returns target, reason or nil when the domain is not routed.
local function choose(domain)
	domain = domain:lower();
	local t = exact[domain];
	if t then return t, "s2smux_routes "..domain; end
	for _, w in ipairs(wildcards) do
		if #domain > #w.suffix and domain:sub(-#w.suffix) == w.suffix then
			return w.target, "s2smux_routes "..w.pattern;
		end
	end
	if catch_all then return catch_all, "s2smux_routes *"; end
	if gateway then return gateway, "s2smux_gateway"; end
	return nil;
end

local function routed_new(hostname, service_name, conn_type, extra)
	if (service_name == "xmpp-server" or service_name == "xmpps-server") and type(hostname) == "string" then
		local target, reason = choose(hostname);
		if target then
			if service_name == "xmpps-server" then
				module:log("debug", "No direct TLS (xmpps-server) attempt for %s: routed by %s", hostname, reason);
				return manual.new({}, conn_type, extra);
			end
			module:log("info", "Routing S2S for %s to %s (%s)", hostname, target.text, reason);
			return basic.new(target.host, target.port, conn_type, extra);
		end
	end
	return original_new(hostname, service_name, conn_type, extra);
end

function module.load()
	load_config();
	service.new = routed_new;
end

module:hook("config-reloaded", load_config);

function module.unload()
	if service.new == routed_new then
		service.new = original_new;
		module:log("info", "Restored the original S2S resolver");
	else
		module:log("warn", "net.resolvers.service.new was replaced by someone else; not restoring it");
	end
end
