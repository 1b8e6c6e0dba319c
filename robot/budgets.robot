*** Settings ***
Documentation     Two processes share one daily budget kept in a SQLiteLedger file. Each runs a
...               crew again and again until the budget refuses; together they never spend more
...               than the limit, as measured by the fake server (its count of tokens at the
...               model's exact prices: $0.000001 per prompt token, $0.000002 per completion).
...               A worker killed with kill -9 mid-run loses no settled spend and holds nothing.
Resource          crewline.resource
Library           OperatingSystem
Library           Process
Test Setup        Prepare A Race
Test Teardown     End The Race


*** Variables ***
${LIMIT}          0.002
${ONE REQUEST}    0.0001


*** Test Cases ***
Two Processes Sharing A Daily Budget Never Exceed It Together
    Start Worker    p0
    Start Worker    p1
    Let The Workers Go
    ${p0}=    Worker Report    p0
    ${p1}=    Worker Report    p1
    Should Be Equal    ${p0}[stopped_by]    daily
    Should Be Equal    ${p1}[stopped_by]    daily
    Should Be True    ${p0}[requests] > 0 and ${p1}[requests] > 0    both processes did work
    ${served}=    Server Totals
    ${spent}=    Served Cost    ${served}
    Amount Should Be At Most    ${spent}    ${LIMIT}
    ${reported}=    Add Amounts    ${p0}[cost]    ${p1}[cost]
    Amounts Should Be Equal    ${reported}    ${spent}
    ${requests}=    Evaluate    ${p0}[requests] + ${p1}[requests]
    Should Be Equal As Integers    ${requests}    ${served}[requests]
    ${on ledger}=    Daily Spend On Ledger    ${DB}
    Amounts Should Be Equal    ${on ledger}    ${spent}
    ${left}=    Evaluate    decimal.Decimal("${LIMIT}") - decimal.Decimal("${spent}")    modules=decimal
    Amount Should Be At Most    ${left}    ${ONE REQUEST}
    Remainder Of Daily Budget Should Be Reservable    ${DB}    ${LIMIT}

The Control: Two Processes With Budgets Of Their Own Spend More Than The Limit
    Start Worker    p0    ledger=memory
    Start Worker    p1    ledger=memory
    Let The Workers Go
    ${p0}=    Worker Report    p0
    ${p1}=    Worker Report    p1
    ${served}=    Server Totals
    ${spent}=    Served Cost    ${served}
    Amount Should Be More Than    ${spent}    ${LIMIT}

A Worker Killed Mid-Run Loses No Settled Spend And Blocks Nothing
    Start Worker    p0
    Start Worker    p1
    Let The Workers Go
    Wait Until Keyword Succeeds    60s    0.05s    Server Should Have Served    p0    3
    Terminate Process    p0    kill=True
    ${p1}=    Worker Report    p1
    Should Be Equal    ${p1}[stopped_by]    daily
    ${served}=    Server Totals
    ${spent}=    Served Cost    ${served}
    Amount Should Be At Most    ${spent}    ${LIMIT}
    ${on ledger}=    Daily Spend On Ledger    ${DB}
    Amount Should Be At Most    ${on ledger}    ${spent}
    ${lost}=    Evaluate    decimal.Decimal("${spent}") - decimal.Decimal("${on ledger}")    modules=decimal
    Amount Should Be At Most    ${lost}    ${ONE REQUEST}
    Remainder Of Daily Budget Should Be Reservable    ${DB}    ${LIMIT}


*** Keywords ***
Prepare A Race
    ${url}=    Start Fake Server    latency=0.01
    Set Test Variable    ${SERVER URL}    ${url}
    ${python}=    Python Executable
    Set Test Variable    ${PYTHON}    ${python}
    ${dir}=    Evaluate    tempfile.mkdtemp(prefix="crewline-robot-")    modules=tempfile
    Set Test Variable    ${DIR}    ${dir}
    Set Test Variable    ${DB}    ${dir}${/}ledger.sqlite3

End The Race
    Terminate All Processes    kill=True
    Stop Fake Server
    Remove Directory    ${DIR}    recursive=True

Start Worker
    [Arguments]    ${name}    ${ledger}=${DB}
    Start Process    ${PYTHON}    ${CURDIR}${/}budget_worker.py    ${SERVER URL}    ${ledger}
    ...    ${name}    ${LIMIT}    ${DIR}    alias=${name}
    ...    stdout=${DIR}${/}${name}.out    stderr=${DIR}${/}${name}.err

Let The Workers Go
    Wait Until Created    ${DIR}${/}ready-p0    timeout=90s
    Wait Until Created    ${DIR}${/}ready-p1    timeout=90s
    Create File    ${DIR}${/}go

Worker Report
    [Arguments]    ${name}
    ${result}=    Wait For Process    ${name}    timeout=90s    on_timeout=kill
    Should Be Equal As Integers    ${result.rc}    0
    ...    msg=worker ${name} failed: ${result.stdout} ${result.stderr}
    ${report}=    Evaluate    json.loads($result.stdout.strip().splitlines()[-1])    modules=json
    RETURN    ${report}

Server Should Have Served
    [Arguments]    ${marker}    ${at least}
    ${served}=    Server Totals    ${marker}
    Should Be True    ${served}[requests] >= ${at least}
