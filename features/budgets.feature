Feature: Budgets are reserved before they are spent, so they never overshoot
  Before each request, crewline reserves its worst case (the prompt's tokens plus max_tokens
  of output, at the model's price) on every budget in scope. A request that does not fit is
  never sent. Money is checked against the server's own count of the tokens it served, at
  the model's exact prices ($0.000001 per prompt token, $0.000002 per completion token).

  Scenario: Thirty tasks at once never take a shared daily budget past its limit
    Given the server answers every request after 20 ms
    And a daily budget of $0.0005 shared through a SQLite ledger
    And 30 tasks that run at once and each want about $0.0001, then a last task
    When the crew is kicked off against the budget, 3 times over, with a fresh ledger each time
    Then the money the server says was spent never exceeds $0.0005
    And the work that fitted was done: several requests were answered, each one on the ledger
    And every kickoff stopped with a BudgetExceededError naming the "daily" budget
    And the last task never ran, and no reservation was left open
    But 30 kickoffs that each check the spend before their call and add it after spend more than $0.0005 (the control)

  Scenario: Spend on a daily budget survives a restart of the ledger
    Given a daily budget of $0.001 shared through a SQLite ledger
    And 3 tasks done one after another that each want about $0.0001
    When the crew is kicked off against the budget
    And the ledger is closed and its file opened again, as after a restart
    Then the reopened ledger's spend for today equals what the server served
    And a daily budget on the reopened file with less than one request's worth left refuses the next kickoff, sending nothing
    But an in-memory ledger starts again from nothing (the control)

  Scenario: A request that does not fit the budget is never sent
    Given a budget of $0.00005 for one kickoff
    And 3 tasks done one after another that each want about $0.0001
    When the crew is kicked off against the budget
    Then the kickoff stopped with a BudgetExceededError that names the budget, the amount asked and what is left
    And the server was sent no request

  Scenario: A token budget stops a crew before the tokens pass the cap
    Given a budget of 300 tokens for one kickoff
    And 8 tasks done one after another that each want about $0.0001
    When the crew is kicked off against the budget
    Then the tokens the server served stay within 300
    And the kickoff stopped with a BudgetExceededError on tokens
    And every request the server answered is on the error's usage
