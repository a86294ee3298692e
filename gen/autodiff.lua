-- autodiff: reverse mode over a traced graph.  Decides which tensors need a
-- gradient (parameters, and everything computed from them) and lists the nodes
-- whose backward rule runs, last node first.  Each op's backward rule itself
-- (which gradients it produces, what it must have saved) lives in the op table.
local ops = require "ops"

local autodiff = {}

-- Ops whose inputs at these positions never receive a gradient (indices,
-- class targets): the rule is the op's, stated in its table entry.
local function input_differentiable(node, i)
  local op = ops[node.op]
  if op.no_grad_inputs and op.no_grad_inputs[i] then return false end
  return node.inputs[i].dtype == "float"
end

-- Returns { needs_grad = {[tensor] = true}, backward = {node, ...} (reverse order),
--           grad_inputs = {[node] = {[i] = true}} }.
-- `frozen[param name]`: parameters with requires_grad = False (train.freeze).  They
-- need no gradient, so an op whose other inputs need none either drops out of the
-- backward, and the rest skip the frozen weight's gradient (its grad operand is NULL).
function autodiff.differentiate(trace, frozen)
  frozen = frozen or {}
  local needs = {}
  local grad_inputs = {}
  for _, node in ipairs(trace.nodes) do
    local any = false
    grad_inputs[node] = {}
    -- an op without gradient (accuracy), train.log's metrics (traced after the loss,
    -- which never reads them), and an op recorded under no_grad (a user training step's):
    -- nothing flows back through them
    local skip = ops[node.op].no_grad or node.metric or node.no_grad
    for i, x in ipairs(skip and {} or node.inputs) do
      if x.param and x.dtype == "float" and not frozen[x.param] then needs[x] = true end
      local refused = needs[x] and ops[node.op].refused_grad and ops[node.op].refused_grad[i]
      if refused then
        require("diag").fatal(node.where, string.format("%s: %s computed from the parameters (one that needs a gradient) is not supported yet", node.op, refused))
      end
      if needs[x] and input_differentiable(node, i) then
        if i == 2 and ops[node.op].no_target_grad then
          -- PyTorch would differentiate the target too; silently dropping it would be wrong
          require("diag").fatal(node.where, string.format("%s: a target computed from the parameters (one that needs a gradient) is not supported yet", node.op))
        end
        grad_inputs[node][i] = true
        any = true
      end
    end
    if any and node.out.dtype == "float" then needs[node.out] = true end
  end
  local backward = {}
  for i = #trace.nodes, 1, -1 do
    local node = trace.nodes[i]
    if needs[node.out] then backward[#backward + 1] = node end
  end
  return { needs_grad = needs, backward = backward, grad_inputs = grad_inputs, trace = trace }
end

return autodiff
