-- Argo CD health of the litgpt.dev kinds (LitGPTModel, FinetuneJob, PretrainJob, ModelServer).
-- Argo CD runs this with the live object as `obj` (gopher-lua, Lua 5.1) and reads back
-- hs.status (Healthy | Progressing | Degraded | Suspended) and hs.message.
-- One script for all four: jobs are Healthy when Succeeded, models and servers when Ready.
local hs = { status = "Progressing", message = "Waiting for the operator" }

local function condition(name)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == name then
      return c
    end
  end
  return nil
end

local function said(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

if obj.status == nil or obj.status.phase == nil then
  return hs
end

-- A spec the operator has not acted on yet: whatever the phase says is about an older spec.
local generation = obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= nil and obj.status.observedGeneration < generation then
  hs.message = "The operator has not yet acted on the latest spec (generation " .. generation .. ")"
  return hs
end

local phase = obj.status.phase
local runs_to_completion = obj.kind == "FinetuneJob" or obj.kind == "PretrainJob"

if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = said(condition("Failed"), said(condition("Ready"), "Failed"))
  return hs
end

-- The fit check refused the run before any pod started: nothing will happen until the spec changes.
local fit = condition("ResourcesFit")
if fit ~= nil and fit.status == "False" then
  hs.status = "Degraded"
  hs.message = said(fit, "The requested GPUs cannot hold this run")
  return hs
end

if phase == "Queued" then
  -- Created suspended for Kueue; admission will start it.
  hs.status = "Suspended"
  hs.message = said(condition("Queued"), "Waiting for admission by the Kueue queue")
  return hs
end

if (runs_to_completion and phase == "Succeeded") or (not runs_to_completion and phase == "Ready") then
  hs.status = "Healthy"
  hs.message = said(condition(runs_to_completion and "Succeeded" or "Ready"), phase)
  return hs
end

hs.message = said(condition("Ready"), phase)
if runs_to_completion then
  local running = condition("Running")
  if running ~= nil and running.status == "True" then
    hs.message = said(running, phase)
  end
end
return hs
